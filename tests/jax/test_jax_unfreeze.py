"""fl.thaw / fl.regroup_opt_state: gradual unfreezing keeps the optax state of trained leaves."""

from __future__ import annotations

import doctest

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_models import arrays_by_name, batch, eqx_net

import frostline as fl
import frostline.jax._unfreeze

SCHEDULE = fl.UnfreezeSchedule.gradual(every=1, start=1)


def adamw():
    return optax.adamw(1e-2, weight_decay=0.1)


def clipped_adamw():
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=0.1))


def adam_state(opt_state) -> optax.ScaleByAdamState:
    """The one ``ScaleByAdamState`` inside a (possibly nested) optax state."""
    def is_adam(x):
        return isinstance(x, optax.ScaleByAdamState)

    return next(s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=is_adam) if is_adam(s))


def make_step(tx):
    x, y = batch()

    @eqx.filter_jit
    def step(trainable, frozen, opt_state):
        def loss(t):
            return jnp.mean((jax.vmap(fl.combine(t, frozen))(x) - y) ** 2)

        grads = eqx.filter_grad(loss)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return eqx.apply_updates(trainable, updates), opt_state

    return step


def train(step, trainable, frozen, opt_state, steps=3):
    for _ in range(steps):
        trainable, opt_state = step(trainable, frozen, opt_state)
    return trainable, opt_state


def run(make_tx):
    """Train with the head only, thaw ``layers.2`` by the schedule, train again."""
    model = eqx_net()
    n = len(fl.groups(model))
    tx = make_tx()
    step = make_step(tx)
    trainable, frozen = fl.partition(model, SCHEDULE.plan_at(0, n))
    trainable, before = train(step, trainable, frozen, tx.init(trainable))
    at_thaw = fl.combine(trainable, frozen)
    trainable, frozen, after = fl.thaw(at_thaw, SCHEDULE.plan_at(1, n), tx, before)
    final, _ = train(step, trainable, frozen, after)
    return dict(model=model, tx=tx, step=step, before=before, at_thaw=at_thaw, after=after,
                trainable=trainable, frozen=frozen, final=fl.combine(final, frozen),
                old=set(fl.mask(model, SCHEDULE.plan_at(0, n)).trainable_names()),
                new=set(fl.mask(model, SCHEDULE.plan_at(1, n)).trainable_names()))


@pytest.fixture(scope="module", params=[adamw, clipped_adamw], ids=["adamw", "chain"])
def thawed(request):
    return run(request.param)


def test_the_schedule_thaws_one_more_group(thawed):
    assert thawed["old"] == {"head.weight", "head.bias"}
    assert thawed["new"] - thawed["old"] == {f"layers.2.{fc}.{p}" for fc in ("fc1", "fc2")
                                             for p in ("weight", "bias")}


def test_already_trainable_leaves_keep_their_moments_bit_identical(thawed):
    before, after = adam_state(thawed["before"]), adam_state(thawed["after"])
    for moment in ("mu", "nu"):
        old, new = arrays_by_name(getattr(before, moment)), arrays_by_name(getattr(after, moment))
        assert set(old) == thawed["old"]
        assert all(np.any(old[n] != 0) and np.array_equal(old[n], new[n]) for n in old)
    assert int(after.count) == int(before.count) == 3


def test_newly_thawed_leaves_start_with_zero_moments(thawed):
    after = adam_state(thawed["after"])
    for moment in ("mu", "nu"):
        arrays = arrays_by_name(getattr(after, moment))
        assert set(arrays) == thawed["new"]
        assert all(not np.any(arrays[n]) for n in thawed["new"] - thawed["old"])


def test_training_after_the_thaw_moves_thawed_leaves_and_keeps_frozen_ones(thawed):
    start, at_thaw, final = (arrays_by_name(thawed[k]) for k in ("model", "at_thaw", "final"))
    thawed_now = thawed["new"] - thawed["old"]
    assert all(np.array_equal(start[n], at_thaw[n]) for n in thawed_now)
    assert all(not np.array_equal(at_thaw[n], final[n]) for n in thawed["new"])
    still_frozen = set(start) - thawed["new"]
    assert still_frozen and all(np.array_equal(start[n], final[n]) for n in still_frozen)


def test_the_run_matches_a_state_merged_by_hand_and_differs_from_a_restart():
    thawed = run(adamw)
    tx, trainable, frozen = thawed["tx"], thawed["trainable"], thawed["frozen"]
    old = adam_state(thawed["before"])
    mu, nu = arrays_by_name(old.mu), arrays_by_name(old.nu)
    restart = tx.init(trainable)

    def carried(moments):
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.asarray(moments[name]) if (name := ".".join(
                str(getattr(k, "name", getattr(k, "idx", k))) for k in path)) in moments
            else jnp.zeros_like(leaf), trainable)

    by_hand = (restart[0]._replace(count=old.count, mu=carried(mu), nu=carried(nu)),
               *restart[1:])
    merged, _ = train(thawed["step"], trainable, frozen, by_hand)
    fresh, _ = train(thawed["step"], trainable, frozen, restart)
    ours, merged, fresh = (arrays_by_name(m) for m in (
        thawed["final"], fl.combine(merged, frozen), fl.combine(fresh, frozen)))
    assert all(np.array_equal(ours[n], merged[n]) for n in ours)
    assert any(not np.array_equal(ours[n], fresh[n]) for n in thawed["old"])


def test_an_unchanged_plan_returns_the_same_state_arrays():
    model, tx = eqx_net(), adamw()
    plan = fl.Plan.lock(2)
    trainable, frozen = fl.partition(model, plan)
    state = tx.init(trainable)
    _, _, again = fl.thaw(model, plan, tx, state)
    assert all(a is b for a, b in zip(jax.tree_util.tree_leaves(state),
                                      jax.tree_util.tree_leaves(again), strict=True))


def test_refreezing_drops_the_state_and_a_later_thaw_starts_fresh():
    model, tx = eqx_net(), adamw()
    step = make_step(tx)
    trainable, frozen = fl.partition(model, fl.Plan.lock(2))
    trainable, state = train(step, trainable, frozen, tx.init(trainable), steps=2)
    trainable, frozen, refrozen = fl.thaw(fl.combine(trainable, frozen), fl.Plan.lock(1), tx,
                                          state)
    head = set(fl.mask(model, fl.Plan.lock(1)).trainable_names())
    assert set(arrays_by_name(adam_state(refrozen).mu)) == head
    _, _, rethawed = fl.thaw(fl.combine(trainable, frozen), fl.Plan.lock(2), tx, refrozen)
    mu = arrays_by_name(adam_state(rethawed).mu)
    assert set(mu) == set(fl.mask(model, fl.Plan.lock(2)).trainable_names())
    assert all(np.any(mu[n]) for n in head)
    assert all(not np.any(mu[n]) for n in set(mu) - head)


def test_shared_fresh_resets_the_step_count_and_keeps_the_moments():
    model, tx = eqx_net(), clipped_adamw()
    step = make_step(tx)
    trainable, frozen = fl.partition(model, fl.Plan.lock(1))
    trainable, state = train(step, trainable, frozen, tx.init(trainable), steps=2)
    _, _, after = fl.thaw(fl.combine(trainable, frozen), fl.Plan.lock(2), tx, state,
                          shared="fresh")
    old, new = adam_state(state), adam_state(after)
    assert int(old.count) == 2 and int(new.count) == 0
    kept, now = arrays_by_name(old.mu), arrays_by_name(new.mu)
    assert all(np.array_equal(kept[n], now[n]) for n in kept)


def test_a_state_from_another_optimizer_is_refused():
    model = eqx_net()
    trainable, _ = fl.partition(model, fl.Plan.lock(1))
    sgd_state = optax.sgd(0.1, momentum=0.9).init(trainable)
    with pytest.raises(fl.PlanError, match="optimizer state does not fit this model"):
        fl.thaw(model, fl.Plan.lock(2), adamw(), sgd_state)


def test_a_state_from_another_model_is_refused():
    tx = adamw()
    wide = {"body": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}}
    narrow = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
    state = tx.init(fl.partition(wide, fl.Plan().freeze("body"))[0])
    with pytest.raises(fl.PlanError, match=r"has shape \(3,\) float32.*needs \(2,\) float32"):
        fl.thaw(narrow, fl.Plan(), tx, state)


def test_an_unknown_shared_option_is_refused():
    model, tx = eqx_net(), adamw()
    trainable, _ = fl.partition(model, fl.Plan.lock(1))
    with pytest.raises(fl.PlanError, match=r"shared must be one of \('keep', 'fresh'\)"):
        fl.regroup_opt_state(tx, tx.init(trainable), trainable, shared="reset")


def test_docstring_examples_run():
    result = doctest.testmod(frostline.jax._unfreeze, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and not result.failed


def adam_moments(opt_state) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (mu, nu)`` over every ``ScaleByAdamState`` in a state (one per label)."""
    def is_adam(x):
        return isinstance(x, optax.ScaleByAdamState)

    out = {}
    for state in jax.tree_util.tree_leaves(opt_state, is_leaf=is_adam):
        if is_adam(state):
            mu, nu = arrays_by_name(state.mu), arrays_by_name(state.nu)
            out.update({n: (mu[n], nu[n]) for n in mu})
    return out


@pytest.mark.parametrize("make_tx", [
    lambda model: fl.layer_decay(model, optax.adamw, lr=1e-2, decay=0.5),
    lambda model: optax.multi_transform(
        {"trainable": optax.adamw(1e-2, weight_decay=0.1), "frozen": optax.set_to_zero()},
        fl.optax_labels(model)),
], ids=["layer_decay", "multi_transform"])
def test_thaw_carries_the_state_of_multi_transform_labels(make_tx):
    model = eqx_net()
    n = len(fl.groups(model))
    tx = make_tx(model)
    step = make_step(tx)
    trainable, frozen = fl.partition(model, SCHEDULE.plan_at(0, n))
    trainable, before = train(step, trainable, frozen, tx.init(trainable))
    trainable, frozen, after = fl.thaw(fl.combine(trainable, frozen), SCHEDULE.plan_at(1, n),
                                       tx, before)
    old, new = adam_moments(before), adam_moments(after)
    assert set(old) == {"head.weight", "head.bias"}
    assert set(new) - set(old) == {f"layers.2.{fc}.{p}" for fc in ("fc1", "fc2")
                                   for p in ("weight", "bias")}
    assert all(np.array_equal(old[n][i], new[n][i]) and np.any(old[n][i])
               for n in old for i in (0, 1))
    assert all(not np.any(new[n][0]) for n in set(new) - set(old))
    at_thaw = arrays_by_name(trainable)
    final, _ = train(step, trainable, frozen, after)
    assert all(not np.array_equal(at_thaw[n], v) for n, v in arrays_by_name(final).items())


def test_thaw_refuses_layer_decay_labels_that_freeze_what_now_trains():
    model = eqx_net()
    tx = fl.layer_decay(model, optax.adamw, lr=1e-2, decay=0.5, plan=fl.Plan.lock(1))
    trainable, _ = fl.partition(model, fl.Plan.lock(1))
    with pytest.raises(fl.PlanError, match="build it without a plan"):
        fl.thaw(model, fl.Plan.lock(2), tx, tx.init(trainable))
