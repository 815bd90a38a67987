"""Flax NNX: the frostline filter drives nnx.Optimizer and nnx.DiffState."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax_models import NnxNet, batch, eqx_net

import frostline as fl


def arrays(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, path)): np.asarray(var.get_value())
            for path, var in nnx.to_flat_state(nnx.state(model))}


def train(model, wrt, steps=3):
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2, weight_decay=0.1), wrt=wrt)
    x, y = batch()

    @nnx.jit
    def step(model, optimizer):
        def loss(m):
            return jnp.mean((m(x) - y) ** 2)

        grads = nnx.grad(loss, argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)
        return grads

    for _ in range(steps):
        grads = step(model, optimizer)
    return optimizer, grads


def test_optimizer_with_the_filter_leaves_frozen_params_bit_identical():
    model = NnxNet()
    plan = fl.Plan.lock(2)
    mask = fl.mask(model, plan)
    before = arrays(model)
    train(model, fl.nnx_filter(model, plan))
    after = arrays(model)
    params = {leaf.name for leaf in fl.view(model).params()}
    frozen = [n for n in mask.frozen_names() if n in params]
    moved = [n for n in mask.trainable_names() if n in params]
    assert frozen and all(np.array_equal(before[n], after[n]) for n in frozen)
    # Biases right before a BatchNorm get a zero gradient; every other trainable param moves.
    assert all(not np.array_equal(before[n], after[n]) for n in moved if not n.endswith("lin.bias"))


def test_gradients_and_optimizer_state_cover_the_trainable_params_only():
    model = NnxNet()
    plan = fl.Plan.lock(1)
    wrt = fl.nnx_filter(model, plan)
    optimizer, grads = train(model, wrt, steps=1)
    trainable = set(fl.mask(model, plan).trainable_names())
    grad_names = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(grads)}
    assert grad_names == trainable
    mu = optimizer.opt_state[0].mu
    assert {".".join(map(str, p)) for p, _ in nnx.to_flat_state(mu)} == trainable


def test_plan_mask_of_an_nnx_module_is_the_filter_and_never_selects_buffers():
    model = NnxNet()
    wrt = fl.filter_spec(model, fl.Plan())
    selected = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, wrt))}
    assert selected == {leaf.name for leaf in fl.view(model).params()}
    assert hash(wrt) == hash(fl.nnx_filter(model))


def test_nnx_filter_refuses_an_equinox_module():
    with pytest.raises(fl.BackendError, match="needs a Flax NNX module"):
        fl.nnx_filter(eqx_net(), fl.Plan.lock(1))
