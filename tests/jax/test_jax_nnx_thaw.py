"""Gradual unfreezing for Flax NNX: fl.thaw makes a new nnx.Optimizer that keeps the old state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax_models import NnxNet, batch

import frostline as fl

SCHEDULE = fl.UnfreezeSchedule.gradual(every=1, start=1)
HEAD = {"head.kernel", "head.bias"}
BLOCK2 = {f"blocks.2.{m}.{k}" for m, ks in (("lin", ("kernel", "bias")), ("bn", ("scale", "bias")))
          for k in ks}


def moments(optimizer) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (mu, nu)`` over every Adam state of the optimizer (one per label)."""
    def is_adam(x):
        return isinstance(x, optax.ScaleByAdamState)

    out = {}
    for state in jax.tree_util.tree_leaves(nnx.as_pure(optimizer.opt_state), is_leaf=is_adam):
        if is_adam(state):
            mu, nu = (dict(nnx.to_flat_state(s)) for s in (state.mu, state.nu))
            out.update({".".join(map(str, k)): (np.asarray(mu[k]), np.asarray(nu[k]))
                        for k in mu if hasattr(mu[k], "shape")})
    return out


def params(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def train(model, optimizer, steps=3):
    x, y = batch()
    wrt = optimizer.wrt

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2),
                         argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)

    for _ in range(steps):
        step(model, optimizer)


@pytest.fixture(scope="module", params=["adamw", "layer_decay"])
def thawed(request):
    model = NnxNet()
    n = len(fl.groups(model))
    tx = (optax.adamw(1e-2, weight_decay=0.1) if request.param == "adamw"
          else fl.layer_decay(model, optax.adamw, lr=1e-2, decay=0.5))
    plan0, plan1 = SCHEDULE.plan_at(0, n), SCHEDULE.plan_at(1, n)
    before = nnx.Optimizer(model, tx, wrt=fl.nnx_filter(model, plan0))
    train(model, before)
    old = moments(before)
    at_thaw = params(model)
    after = fl.thaw(model, plan1, before)
    new = moments(after)
    train(model, after)
    return dict(old=old, new=new, before=before, after=after, at_thaw=at_thaw,
                final=params(model))


def test_thaw_keeps_the_moments_of_trained_variables_bit_identical(thawed):
    old, new = thawed["old"], thawed["new"]
    assert set(old) == HEAD and set(new) == HEAD | BLOCK2
    assert all(np.any(old[n][i]) and np.array_equal(old[n][i], new[n][i])
               for n in HEAD for i in (0, 1))
    assert all(not np.any(new[n][0]) and not np.any(new[n][1]) for n in BLOCK2)


def test_thaw_keeps_the_step_count(thawed):
    assert int(thawed["after"].step[...]) == 6
    counts = [int(c) for c in jax.tree_util.tree_leaves(nnx.as_pure(thawed["after"].opt_state))
              if np.shape(c) == ()]
    assert counts and set(counts) == {6}


def test_after_the_thaw_the_thawed_variables_train_and_the_rest_stays(thawed):
    at_thaw, final = thawed["at_thaw"], thawed["final"]
    moved = {n for n in final if not np.array_equal(at_thaw[n], final[n])}
    assert moved == HEAD | BLOCK2


def test_thaw_refuses_an_optax_state_for_nnx():
    model = NnxNet()
    with pytest.raises(fl.PlanError, match="takes the nnx.Optimizer"):
        fl.thaw(model, fl.Plan.lock(2), optax.adam(1e-2), None)


def test_thaw_refuses_the_optimizer_of_another_model():
    wide, narrow = NnxNet(width=6), NnxNet()
    other = nnx.Optimizer(wide, optax.adam(1e-2), wrt=fl.nnx_filter(wide, fl.Plan.lock(1)))
    with pytest.raises(fl.PlanError, match=r"has shape \(6, 2\)"):
        fl.thaw(narrow, fl.Plan.lock(2), other)


def test_regroup_opt_state_on_nnx_states():
    model = NnxNet()
    tx = optax.adam(1e-2)
    old_state = nnx.as_pure(nnx.state(model, fl.nnx_filter(model, fl.Plan.lock(1))))
    opt_state = tx.init(old_state)
    grads = jax.tree_util.tree_map(jnp.ones_like, old_state)
    _, opt_state = tx.update(grads, opt_state, old_state)
    new_state = nnx.as_pure(nnx.state(model, fl.nnx_filter(model, fl.Plan.lock(2))))
    regrouped = fl.regroup_opt_state(tx, opt_state, new_state)
    assert jax.tree_util.tree_structure(regrouped) == jax.tree_util.tree_structure(
        tx.init(new_state))
    assert regrouped[0].mu["head"]["kernel"] is opt_state[0].mu["head"]["kernel"]
    assert not np.any(np.asarray(regrouped[0].mu["blocks"][2]["lin"]["kernel"]))
    assert int(regrouped[0].count) == 1


def test_optax_labels_name_nnx_state_variables():
    model = NnxNet()
    labels = fl.optax_labels(model, fl.Plan.lock(1))
    tree = labels(nnx.state(model, nnx.Param))
    assert tree["head"]["kernel"] == "trainable"
    assert tree["stem"]["kernel"] == "frozen"
