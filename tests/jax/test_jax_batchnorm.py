"""Frozen BatchNorms in inference mode: their statistics stay while the rest trains."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax_models import BnNet, NnxNet, batch

import frostline as fl
from frostline.core.backend import backend_for


def bn_stats(state: eqx.nn.State, bn: eqx.nn.BatchNorm) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(
        (state.get(bn.batch_state_index), state.get(bn.batch_counter)))]


def train_eqx(model, state, plan, steps=3):
    trainable, frozen = fl.partition(model, plan)
    tx = optax.adamw(1e-2, weight_decay=0.1)
    opt_state = tx.init(eqx.filter(trainable, eqx.is_array))
    x, y = batch()

    @eqx.filter_jit
    def step(trainable, state, opt_state):
        def loss(t, state):
            m = fl.combine(t, frozen)
            out, state = jax.vmap(m, axis_name="batch", in_axes=(0, None),
                                  out_axes=(0, None))(x, state)
            return jnp.mean((out - y) ** 2), state

        (_, state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(trainable, state)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(trainable, eqx.is_array))
        return eqx.apply_updates(trainable, updates), state, opt_state

    for _ in range(steps):
        trainable, state, opt_state = step(trainable, state, opt_state)
    return fl.combine(trainable, frozen), state


def test_equinox_frozen_batchnorm_goes_to_inference_and_the_other_does_not():
    model, _ = eqx.nn.make_with_state(BnNet)(key=jax.random.key(0))
    plan = fl.Plan().freeze("lin0 | bn0").with_bn(freeze_bn_stats=True)
    fixed = fl.frozen_bn_inference(model, plan)
    assert fixed.bn0.inference is True and fixed.bn1.inference is False
    assert model.bn0.inference is False
    assert backend_for(fixed).frozen_stats(fixed) == {"bn0"}


def test_equinox_frozen_batchnorm_statistics_stay_while_the_rest_trains():
    model, state = eqx.nn.make_with_state(BnNet)(key=jax.random.key(0))
    plan = fl.Plan().freeze("lin0 | bn0").with_bn(freeze_bn_stats=True)
    model = fl.frozen_bn_inference(model, plan)
    _, warm = train_eqx(model, state, plan, steps=1)
    trained, after = train_eqx(model, warm, plan)
    assert all(np.array_equal(a, b) for a, b in zip(bn_stats(warm, model.bn0),
                                                    bn_stats(after, trained.bn0)))
    assert not all(np.array_equal(a, b) for a, b in zip(bn_stats(warm, model.bn1),
                                                        bn_stats(after, trained.bn1)))
    assert not np.array_equal(model.lin1.weight, trained.lin1.weight)
    assert np.array_equal(model.bn0.weight, trained.bn0.weight)


def nnx_stats(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}


def test_nnx_frozen_batchnorm_statistics_stay_while_the_rest_trains():
    model = NnxNet()
    plan = fl.Plan.lock(2, freeze_bn_stats=True)
    assert fl.frozen_bn_inference(model, plan) is model
    assert [b.bn.use_running_average for b in model.blocks] == [True, True, False]
    before = nnx_stats(model)
    wrt = fl.nnx_filter(model, plan)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2, weight_decay=0.1), wrt=wrt)
    x, y = batch()

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2),
                         argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)

    for _ in range(2):
        step(model, optimizer)
    after = nnx_stats(model)
    for name in before:
        assert np.array_equal(before[name], after[name]) == (not name.startswith("blocks.2"))


# --- modes both ways, through thaws, and train_bn with fixed statistics ----------------------


def bn_blocks():
    from jax_models import BnBlocks

    return eqx.nn.make_with_state(BnBlocks)(key=jax.random.key(0))


def test_equinox_apply_sets_modes_both_ways():
    model, _ = bn_blocks()
    locked = fl.apply(model, fl.Plan.lock(1, freeze_bn_stats=True))
    assert [b.bn.inference for b in locked.blocks] == [True, True, True]
    thawed = fl.apply(locked, fl.Plan.lock(3, freeze_bn_stats=True))
    assert [b.bn.inference for b in thawed.blocks] == [True, False, False]
    assert [b.bn.inference for b in fl.apply(thawed, fl.Plan()).blocks] == [False] * 3


def test_equinox_thaw_puts_a_thawed_group_back_to_training_statistics():
    model, state = bn_blocks()
    tx = optax.adamw(1e-2)
    plan0 = fl.Plan.lock(1, freeze_bn_stats=True)
    model = fl.apply(model, plan0)
    trainable, _ = fl.partition(model, plan0)
    trainable, frozen, _ = fl.thaw(model, fl.Plan.lock(3, freeze_bn_stats=True), tx,
                                   tx.init(trainable))
    model = fl.combine(trainable, frozen)
    assert [b.bn.inference for b in model.blocks] == [True, False, False]
    x, _ = batch()
    _, after = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)
    moved = [not all(np.array_equal(a, b) for a, b in zip(bn_stats(state, blk.bn),
                                                          bn_stats(after, blk.bn)))
             for blk in model.blocks]
    assert moved == [False, True, True]


def test_nnx_eval_then_train_keeps_fixed_statistics_fixed():
    model = NnxNet()
    plan = fl.Plan.lock(2, freeze_bn_stats=True)
    fl.frozen_bn_inference(model, plan)
    model.eval()
    model.train()
    assert [b.bn.use_running_average for b in model.blocks] == [True, True, False]
    before = nnx_stats(model)
    model(batch()[0])
    after = nnx_stats(model)
    assert {n for n in before if not np.array_equal(before[n], after[n])} == {
        "blocks.2.bn.mean", "blocks.2.bn.var"}
    fl.apply(model, fl.Plan.lock(3, freeze_bn_stats=True))
    model.train()
    assert [b.bn.use_running_average for b in model.blocks] == [True, False, False]


def test_nnx_fixed_statistics_survive_pickling():
    import pickle

    model = NnxNet()
    fl.frozen_bn_inference(model, fl.Plan.lock(2, freeze_bn_stats=True))
    copy = pickle.loads(pickle.dumps(model))
    copy.train()
    assert [b.bn.use_running_average for b in copy.blocks] == [True, True, False]
