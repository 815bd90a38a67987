"""The JAX guard: fingerprints of the bytes name every frozen leaf that moved."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax_models import NnxNet, batch, eqx_net

import frostline as fl


def loss_fn(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def train_partitioned(model, plan):
    trainable, frozen = fl.partition(model, plan)
    tx = optax.adamw(1e-2, weight_decay=0.1)
    grads = eqx.filter_grad(lambda t: loss_fn(fl.combine(t, frozen), *batch()))(trainable)
    params = eqx.filter(trainable, eqx.is_array)
    updates, _ = tx.update(grads, tx.init(params), params)
    return fl.combine(eqx.apply_updates(trainable, updates), frozen)


def train_zeroed_full_gradients(model, plan):
    """The wrong route: full gradients, frozen ones zeroed; AdamW's weight decay still moves them."""
    grads = eqx.filter_grad(loss_fn)(model, *batch())
    keep = fl.optax_mask(model, plan)(grads)
    grads = jax.tree_util.tree_map(lambda g, k: g if k else jnp.zeros_like(g), grads, keep)
    params = eqx.filter(model, eqx.is_array)
    tx = optax.adamw(1e-2, weight_decay=0.1)
    updates, _ = tx.update(grads, tx.init(params), params)
    return eqx.apply_updates(model, updates)


def test_partitioned_training_passes_the_guard():
    model = eqx_net()
    plan = fl.Plan.lock(2)
    snap = fl.snapshot(model, plan)
    snap.check(train_partitioned(model, plan), require_trainable_moved=True)


def test_zeroed_full_gradients_with_weight_decay_fail_naming_every_frozen_leaf():
    model = eqx_net()
    plan = fl.Plan.lock(2)
    snap = fl.snapshot(model, plan)
    frozen = fl.mask(model, plan).frozen_names()
    with pytest.raises(fl.GuardError, match=f"{len(frozen)} frozen leaves moved") as info:
        snap.check(train_zeroed_full_gradients(model, plan))
    assert all(name in str(info.value) for name in frozen)


def test_guard_block_checks_the_model_handed_to_update():
    model = eqx_net()
    plan = fl.Plan.lock(1)
    with pytest.raises(fl.GuardError, match="frozen leaves moved"):
        with fl.guard(model, plan) as snap:
            model = snap.update(train_zeroed_full_gradients(model, plan))


def test_guard_block_without_update_says_to_hand_back_the_model():
    model = eqx_net()
    with pytest.raises(fl.GuardError, match="snap.update"):
        with fl.guard(model, fl.Plan.lock(1)):
            train_partitioned(model, fl.Plan.lock(1))


def test_require_trainable_moved_names_the_parameters_that_stayed():
    model = eqx_net()
    snap = fl.snapshot(model, fl.Plan.lock(1))
    with pytest.raises(fl.GuardError, match="2 trainable parameters did not move: head.weight"):
        snap.check(model, require_trainable_moved=True)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int32, jnp.bool_, jnp.uint8])
def test_a_single_element_change_is_caught_for_every_dtype(dtype):
    frozen = jnp.zeros((4, 5), dtype)
    tree = {"frozen": frozen, "head": jnp.ones(3)}
    snap = fl.snapshot(tree, fl.Plan().freeze("frozen"))
    one = jnp.ones((), dtype)
    with pytest.raises(fl.GuardError, match="1 frozen leaves moved: frozen"):
        snap.check({"frozen": frozen.at[2, 3].set(one), "head": tree["head"]})
    snap.check({"frozen": jnp.zeros((4, 5), dtype), "head": tree["head"]})


def test_snapshot_of_a_jax_model_needs_a_plan():
    with pytest.raises(fl.PlanError, match="needs the plan"):
        fl.snapshot(eqx_net())


def test_check_of_a_model_missing_leaves_is_an_error():
    snap = fl.snapshot({"a": jnp.ones(2), "b": jnp.ones(2)}, fl.Plan().freeze("a"))
    with pytest.raises(fl.GuardError, match="lacks 1 leaves"):
        snap.check({"b": jnp.ones(2)})


def nnx_train(model, plan):
    wrt = fl.nnx_filter(model, plan)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2, weight_decay=0.1), wrt=wrt)
    x, y = batch()
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2), argnums=nnx.DiffState(0, wrt))(model)
    optimizer.update(model, grads)


def test_nnx_guard_rereads_the_live_module():
    model = NnxNet()
    plan = fl.Plan.lock(2)
    with fl.guard(model, plan, buffers=False, require_trainable_moved=True):
        nnx_train(model, plan)


def test_nnx_guard_catches_statistics_of_frozen_batchnorms_by_default():
    model = NnxNet()
    plan = fl.Plan.lock(2)
    with pytest.raises(fl.GuardError, match=r"^4 BatchNorm statistics of frozen BatchNorms moved: "
                                            "blocks.0.bn.mean, blocks.0.bn.var") as info:
        with fl.guard(model, plan):
            nnx_train(model, plan)
    assert "blocks.2.bn.mean" not in str(info.value)


def test_nnx_guard_passes_once_frozen_batchnorms_are_in_inference():
    model = NnxNet()
    plan = fl.Plan.lock(2, freeze_bn_stats=True)
    fl.frozen_bn_inference(model, plan)
    with fl.guard(model, plan):
        nnx_train(model, plan)
    assert not np.array_equal(np.asarray(model.blocks[2].bn.mean[...]), np.zeros(4))


def test_plus_one_minus_two_plus_one_ulp_on_neighbours_is_caught():
    frozen = jnp.linspace(1.0, 2.0, 10_000, dtype=jnp.float32)
    bits = jax.lax.bitcast_convert_type(frozen, jnp.int32)
    changed = jax.lax.bitcast_convert_type(bits.at[5000:5003].add(jnp.array([1, -2, 1])),
                                           jnp.float32)
    snap = fl.snapshot({"frozen": frozen, "head": jnp.ones(2)}, fl.Plan().freeze("frozen"))
    with pytest.raises(fl.GuardError, match="1 frozen leaves moved: frozen"):
        snap.check({"frozen": changed, "head": jnp.ones(2)})


def test_one_and_two_swapped_4096_apart_are_caught():
    frozen = jnp.zeros(10_000, jnp.float32).at[100].set(1.0).at[4196].set(2.0)
    snap = fl.snapshot({"frozen": frozen, "head": jnp.ones(2)}, fl.Plan().freeze("frozen"))
    swapped = frozen.at[100].set(2.0).at[4196].set(1.0)
    with pytest.raises(fl.GuardError, match="1 frozen leaves moved: frozen"):
        snap.check({"frozen": swapped, "head": jnp.ones(2)})


def test_a_dtype_cast_of_frozen_leaves_is_named_as_a_cast():
    model = eqx_net()
    plan = fl.Plan.lock(1)
    snap = fl.snapshot(model, plan)
    cast = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.bfloat16) if eqx.is_inexact_array(x) else x, model)
    with pytest.raises(fl.GuardError, match=r"frozen leaves changed dtype or shape since the "
                                            r"snapshot: .*\(float32\[.*\] -> bfloat16\["):
        snap.check(cast)


def test_the_jax_guard_refuses_an_optimizer_argument():
    with pytest.raises(fl.GuardError, match="takes no optimizer"):
        fl.snapshot(eqx_net(), fl.Plan.lock(1), optimizer=optax.adam(1e-3))


def test_rounding_frozen_leaves_through_bfloat16_is_named_as_precision_loss():
    frozen = jax.random.normal(jax.random.key(0), (16,))
    snap = fl.snapshot({"frozen": frozen, "head": jnp.ones(2)}, fl.Plan().freeze("frozen"))
    rounded = frozen.astype(jnp.bfloat16).astype(jnp.float32)
    with pytest.raises(fl.GuardError, match=r"1 frozen leaves moved, and every value now fits a "
                                            r"lower precision: frozen \(bfloat16\)"):
        snap.check({"frozen": rounded, "head": jnp.ones(2)})


def test_bfloat16_updates_rounded_away_are_named_as_precision_loss():
    head = jnp.full(4, 1.0, jnp.bfloat16)
    tree = {"frozen": jnp.zeros(2), "head": head}
    snap = fl.snapshot(tree, fl.Plan().freeze("frozen"))
    updated = {"frozen": tree["frozen"], "head": head + jnp.bfloat16(1e-4)}
    assert bool(jnp.array_equal(updated["head"], head))
    with pytest.raises(fl.GuardError, match=r"1 trainable parameters did not move: head\. .* 1 of "
                                            r"them are bfloat16: .*precision loss"):
        snap.check(updated, require_trainable_moved=True)


# --- eqx.nn.State statistics and (model, state) pairs ---------------------------------------


def test_guard_watches_batchnorm_statistics_held_in_an_eqx_state():
    from jax_models import BnBlocks

    model, state = eqx.nn.make_with_state(BnBlocks)(key=jax.random.key(0))
    plan = fl.Plan.lock(2)
    x, _ = batch()

    def forward(model, state):
        return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)

    with pytest.raises(fl.GuardError, match=r"blocks\.0\.bn\.running_mean.*training mode"):
        with fl.guard((model, state), plan, buffers=True) as snap:
            _, state = forward(model, state)
            snap.update((model, state))
    fixed = plan.with_bn(freeze_bn_stats=True)
    model = fl.apply(model, fixed)
    with fl.guard((model, state), fixed, buffers=True) as snap:
        _, state = forward(model, state)
        snap.update((model, state))
    assert set(snap.frozen) >= {f"blocks.{i}.bn.running_{s}" for i in (0, 1) for s in ("mean",
                                                                                      "var")}


def test_a_pair_is_for_the_guard_only():
    from jax_models import BnBlocks

    pair = eqx.nn.make_with_state(BnBlocks)(key=jax.random.key(0))
    with pytest.raises(fl.BackendError, match="pass the model alone"):
        fl.partition(pair, fl.Plan.lock(1))
