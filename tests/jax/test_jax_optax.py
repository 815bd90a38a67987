"""optax masks, labels, the optax.freeze adapter and layer-wise learning-rate decay."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_models import arrays_by_name, batch, eqx_net, linen_style_params

import frostline as fl


def loss_fn(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def test_an_equinox_label_tree_would_be_called_by_optax():
    model = eqx_net()
    spec = fl.filter_spec(model, fl.Plan.lock(1))
    labels = jax.tree_util.tree_map(lambda t: "trainable" if t else "frozen", spec)
    tx = optax.multi_transform({"trainable": optax.adam(1e-3), "frozen": optax.set_to_zero()},
                               labels)
    with pytest.raises(TypeError, match="@"):
        tx.init(eqx.filter(model, eqx.is_array))


def test_labels_are_a_plain_tree_built_for_the_tree_optax_gives():
    model = eqx_net()
    labels = fl.optax_labels(model, fl.Plan.lock(1))
    tree = labels(eqx.filter(model, eqx.is_array))
    assert tree.head.weight == "trainable" and tree.stem.weight == "frozen"
    assert tree.A.activation is None
    trainable, _ = fl.partition(model, fl.Plan.lock(1))
    assert set(jax.tree_util.tree_leaves(labels(trainable))) == {"trainable"}


def test_multi_transform_with_frostline_labels_keeps_frozen_leaves_under_weight_decay():
    model = eqx_net()
    plan = fl.Plan.lock(1)
    tx = optax.multi_transform(
        {"trainable": optax.adamw(1e-2, weight_decay=0.5), "frozen": optax.set_to_zero()},
        fl.optax_labels(model, plan))
    params = eqx.filter(model, eqx.is_array)
    state = tx.init(params)
    grads = eqx.filter_grad(loss_fn)(model, *batch())
    updates, _ = tx.update(grads, state, params)
    trained = eqx.apply_updates(model, updates)
    before, after = arrays_by_name(model), arrays_by_name(trained)
    mask = fl.mask(model, plan)
    assert all(np.array_equal(before[n], after[n]) for n in mask.frozen_names())
    assert all(not np.array_equal(before[n], after[n]) for n in mask.trainable_names())


def test_optax_mask_matches_the_filter_spec():
    model = eqx_net()
    plan = fl.Plan().freeze("name:bias")
    mask = fl.optax_mask(model, plan)(model)
    spec = fl.filter_spec(model, plan)
    assert jax.tree_util.tree_leaves(mask) == jax.tree_util.tree_leaves(spec)


def adamw_steps(model, tx, steps=3):
    """``steps`` optax steps on the full parameters of ``model``: the trained model."""
    params = eqx.filter(model, eqx.is_array)
    state = tx.init(params)
    for _ in range(steps):
        grads = eqx.filter_grad(loss_fn)(model, *batch())
        updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_array))
        model = eqx.apply_updates(model, updates)
    return model


def moved_names(before, after) -> set[str]:
    a, b = arrays_by_name(before), arrays_by_name(after)
    return {n for n in a if not np.array_equal(a[n], b[n])}


def decaying_adamw():
    return optax.adamw(1e-2, weight_decay=0.5)


def test_masked_then_freeze_last_keeps_frozen_leaves_under_weight_decay():
    model, plan = eqx_net(), fl.Plan.lock(2)
    tx = optax.chain(optax.masked(decaying_adamw(), fl.optax_mask(model, plan)),
                     fl.optax_freeze(model, plan))
    assert moved_names(model, adamw_steps(model, tx)) == set(
        fl.mask(model, plan).trainable_names())


def test_freeze_last_keeps_frozen_leaves_under_weight_decay():
    model, plan = eqx_net(), fl.Plan.lock(2)
    tx = optax.chain(decaying_adamw(), fl.optax_freeze(model, plan))
    assert moved_names(model, adamw_steps(model, tx)) == set(
        fl.mask(model, plan).trainable_names())


def test_the_forms_the_docs_warn_against_do_move_frozen_leaves():
    """Why the recipes end with the freeze: masked alone passes raw gradients through, and a
    freeze before adamw leaves weight decay to move the frozen kernels."""
    model, plan = eqx_net(), fl.Plan.lock(2)
    frozen = set(fl.mask(model, plan).frozen_names())
    masked_alone = optax.masked(decaying_adamw(), fl.optax_mask(model, plan))
    freeze_first = optax.chain(fl.optax_freeze(model, plan), decaying_adamw())
    assert moved_names(model, adamw_steps(model, masked_alone)) >= frozen
    assert moved_names(model, adamw_steps(model, freeze_first)) >= {
        n for n in frozen if n.endswith("weight")}


def test_optax_freeze_adapter_inverts_to_true_is_frozen():
    params = {"params": {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}}
    plan = fl.Plan().freeze("params.body")
    tx = optax.chain(optax.sgd(0.1), fl.optax_freeze(params, plan))
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    moved = {n for n, u in arrays_by_name(updates).items() if np.any(u != 0)}
    assert moved == {"params.head.w"}


def test_layer_decay_scales_each_group_from_the_head_down():
    model = eqx_net()
    labels, scales = fl.layer_decay_labels(model, 0.5, fl.Plan.lock(3))
    assert scales == {"group2": 0.25, "group3": 0.5, "group4": 1.0}
    by_name = labels.as_dict()
    assert by_name["layers.1.fc1.weight"] == "group2"
    assert by_name["head.bias"] == "group4"
    assert by_name["stem.weight"] == "frozen"


def test_layer_decay_transform_applies_the_scaled_rates():
    model = eqx_net()
    plan = fl.Plan.lock(2)
    trainable, frozen = fl.partition(model, plan)
    tx = fl.layer_decay(model, optax.sgd, lr=0.1, decay=0.5, plan=plan)
    grads = eqx.filter_grad(lambda t: loss_fn(fl.combine(t, frozen), *batch()))(trainable)
    updates, _ = tx.update(grads, tx.init(trainable), trainable)
    g, u = arrays_by_name(grads), arrays_by_name(updates)
    assert set(u) == set(fl.mask(model, plan).trainable_names())
    np.testing.assert_allclose(u["layers.2.fc1.weight"], -0.05 * g["layers.2.fc1.weight"],
                               rtol=1e-6)
    np.testing.assert_allclose(u["head.weight"], -0.1 * g["head.weight"], rtol=1e-6)


def test_layer_decay_rejects_a_decay_outside_zero_to_one():
    with pytest.raises(fl.PlanError, match=r"decay must be in \(0, 1\]"):
        fl.layer_decay_labels(eqx_net(), 1.5)


def test_labels_refuse_a_tree_of_another_model():
    labels = fl.optax_labels(linen_style_params())
    with pytest.raises(fl.PlanError, match="lacks"):
        labels({"other": jnp.ones(2)})
