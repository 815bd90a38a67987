"""Layers inside a scanned stack: per-layer update scales (freezing, layer-wise decay)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_models import arrays_by_name
from linen_models import ScannedEncoder

import frostline as fl

X = jnp.ones((2, 3))
STACK = "encoderblock"


@pytest.fixture(scope="module")
def variables():
    return ScannedEncoder().init(jax.random.key(0), X)


def steps(variables, tx, n=3):
    params = variables["params"]
    state = tx.init(params)
    for _ in range(n):
        grads = jax.grad(lambda p: jnp.mean(ScannedEncoder().apply({"params": p}, X) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return {"params": params}


def test_zero_scales_keep_bottom_layers_of_the_stack_under_weight_decay(variables):
    tx = optax.chain(optax.adamw(1e-2, weight_decay=0.5),
                     fl.stack_scales(variables["params"], STACK, [0, 0, 1, 1]))
    before = arrays_by_name(variables["params"])
    after = arrays_by_name(steps(variables, tx)["params"])
    stacked = [n for n in before if n.startswith(STACK + ".")]
    assert stacked and all(before[n].shape[0] == 4 for n in stacked)
    for name in stacked:
        assert np.array_equal(before[name][:2], after[name][:2])
        assert not np.array_equal(before[name][2:], after[name][2:])
    assert not np.array_equal(before["head.kernel"], after["head.kernel"])


def test_layer_decay_scales_each_layer_of_the_stack(variables):
    scales = [0.125, 0.25, 0.5, 1.0]
    params = variables["params"]
    tx = optax.chain(optax.sgd(1.0), fl.stack_scales(params, STACK, scales))
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates = arrays_by_name(tx.update(grads, tx.init(params))[0])
    for name, update in updates.items():
        if name.startswith(STACK + "."):
            assert [float(update[i].ravel()[0]) for i in range(4)] == [-s for s in scales]
        else:
            assert np.all(update == -1.0)


def test_the_stack_is_one_piece_for_groups(variables):
    found = fl.groups(variables)
    stacked = {n for n in fl.view(variables).names if n.startswith(f"params.{STACK}.")}
    assert stacked and any(set(g.leaf_names) >= stacked for g in found)


def test_wrong_layer_count_and_unknown_stack_are_refused(variables):
    params = variables["params"]
    with pytest.raises(fl.PlanError, match=r"must hold the layers on axis 0 \(shape \(3, \.\.\.\)\)"):
        fl.stack_scales(params, STACK, [0, 1, 1])
    with pytest.raises(fl.SelectorError, match="no array lies under 'encoderblocks'"):
        fl.stack_scales(params, "encoderblocks", [0, 1, 1, 1])


def test_updates_of_another_tree_are_refused(variables):
    tx = fl.stack_scales(variables, f"params.{STACK}", [0, 0, 1, 1])
    grads = jax.tree_util.tree_map(jnp.ones_like, variables["params"])
    with pytest.raises(fl.PlanError, match="lacks"):
        tx.update(grads, tx.init(variables["params"]))
