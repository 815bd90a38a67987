"""fl.partition / fl.combine: the trainable part alone is differentiated and optimized."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_models import NnxNet, arrays_by_name, batch, eqx_net, linen_style_params

import frostline as fl


def array_names(tree) -> set[str]:
    return set(arrays_by_name(tree))


def train(model, plan, steps=3):
    """AdamW with weight decay through partition/combine; returns the model and the grads."""
    trainable, frozen = fl.partition(model, plan)
    tx = optax.adamw(1e-2, weight_decay=0.1)
    opt_state = tx.init(eqx.filter(trainable, eqx.is_array))
    x, y = batch()

    @eqx.filter_jit
    def step(trainable, opt_state):
        def loss(t):
            m = fl.combine(t, frozen)
            return jnp.mean((jax.vmap(m)(x) - y) ** 2)

        grads = eqx.filter_grad(loss)(trainable)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(trainable, eqx.is_array))
        return eqx.apply_updates(trainable, updates), opt_state, grads

    for _ in range(steps):
        trainable, opt_state, grads = step(trainable, opt_state)
    return fl.combine(trainable, frozen), grads, opt_state


def test_partition_equals_eqx_partition_with_the_plan_mask():
    model = eqx_net()
    plan = fl.Plan.lock(2)
    ours = fl.partition(model, plan)
    theirs = eqx.partition(model, fl.filter_spec(model, plan))
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
    assert all(a is b for a, b in zip(jax.tree_util.tree_leaves(ours),
                                      jax.tree_util.tree_leaves(theirs)))


def test_training_leaves_frozen_leaves_bit_identical_and_moves_trainable_ones():
    model = eqx_net()
    plan = fl.Plan.lock(2)
    trained, _, _ = train(model, plan)
    mask = fl.mask(model, plan)
    before, after = arrays_by_name(model), arrays_by_name(trained)
    frozen = mask.frozen_names()
    assert frozen and all(np.array_equal(before[n], after[n]) for n in frozen)
    assert all(not np.array_equal(before[n], after[n]) for n in mask.trainable_names())


def test_gradients_and_optimizer_state_exist_for_the_trainable_part_only():
    model = eqx_net()
    plan = fl.Plan.lock(1)
    _, grads, opt_state = train(model, plan, steps=1)
    trainable = set(fl.mask(model, plan).trainable_names())
    assert array_names(grads) == trainable
    assert array_names(opt_state[0].mu) == trainable


def test_guide_verification_frozen_module_a_stays_and_the_rest_trains():
    model = eqx_net()
    trained, _, _ = train(model, fl.Plan().freeze("name:A"))
    assert np.array_equal(model.A.layers[0].bias, trained.A.layers[0].bias)
    assert not np.allclose(model.stem.weight, trained.stem.weight)


def test_combine_restores_the_model():
    model = eqx_net()
    trainable, frozen = fl.partition(model, fl.Plan().freeze("name:bias"))
    assert eqx.tree_equal(fl.combine(trainable, frozen), model)


def test_combine_dispatches_on_dict_pytrees_with_none_holes():
    params = linen_style_params()
    trainable, frozen = fl.partition(params, fl.Plan().freeze("params.Dense_0"))
    assert trainable["params"]["Dense_0"]["kernel"] is None
    restored = fl.combine(trainable, frozen)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(params)
    assert all(a is b for a, b in zip(jax.tree_util.tree_leaves(restored),
                                      jax.tree_util.tree_leaves(params)))


def test_combine_of_a_fully_frozen_dict_dispatches_on_the_frozen_half():
    params = {"w": jnp.ones(2), "b": jnp.zeros(2)}
    trainable, frozen = fl.partition(params, fl.Plan().freeze("**"))
    assert trainable == {"w": None, "b": None}
    assert fl.combine(trainable, frozen)["w"] is params["w"]


def test_partition_without_plan_makes_every_array_trainable():
    model = eqx_net()
    trainable, frozen = fl.partition(model)
    assert array_names(trainable) == set(fl.view(model).names)
    assert array_names(frozen) == set()


def test_partition_accepts_a_ready_mask_and_refuses_a_foreign_one():
    model = eqx_net()
    mask = fl.mask(model, fl.Plan().freeze("name:bias"))
    trainable, _ = fl.partition(model, mask)
    assert array_names(trainable) == set(mask.trainable_names())
    with pytest.raises(fl.PlanError, match="does not fit this model"):
        fl.partition(linen_style_params(), mask)


def test_partition_of_an_nnx_module_points_to_the_nnx_filter():
    with pytest.raises(fl.BackendError, match="fl.nnx_filter"):
        fl.partition(NnxNet(), fl.Plan.lock(1))


def test_apply_returns_the_jax_model_unchanged():
    model = eqx_net()
    assert fl.apply(model, fl.Plan.lock(1)) is model
