"""The JAX backend on a GPU: partition/combine under jit trains only the trainable leaves."""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax")
eqx = pytest.importorskip("equinox")
optax = pytest.importorskip("optax")

import numpy as np  # noqa: E402

import frostline as fl  # noqa: E402


def _gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


pytestmark = pytest.mark.skipif(not _gpus(), reason="needs a JAX GPU device")


def test_jitted_partition_step_on_gpu_moves_only_trainable_leaves():
    key = jax.random.PRNGKey(0)  # the default device is the GPU where one is present
    model = eqx.nn.MLP(8, 2, width_size=16, depth=4, key=key)
    plan = fl.lock(model, unlocked_groups=1)
    trainable, frozen = fl.partition(model, plan)
    tx = optax.adamw(1e-2, weight_decay=0.1)
    state = tx.init(eqx.filter(trainable, eqx.is_array))
    x = jax.random.normal(key, (4, 8))

    @eqx.filter_jit
    def step(trainable, state):
        def loss(t):
            return jax.numpy.mean(jax.vmap(fl.combine(t, frozen))(x) ** 2)

        grads = eqx.filter_grad(loss)(trainable)
        updates, state = tx.update(grads, state, eqx.filter(trainable, eqx.is_array))
        return eqx.apply_updates(trainable, updates), state

    for _ in range(3):
        trainable, state = step(trainable, state)
    new = fl.combine(trainable, frozen)
    assert np.array_equal(np.asarray(new.layers[0].weight), np.asarray(model.layers[0].weight))
    assert not np.array_equal(np.asarray(new.layers[-1].weight),
                              np.asarray(model.layers[-1].weight))
    assert list(new.layers[-1].weight.devices())[0].platform == "gpu"
