"""fl.groups and fl.lock on JAX models: stem / block stack / head, and explicit groups."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from jax_models import NnxNet, eqx_net, linen_style_params

import frostline as fl


def test_equinox_list_of_blocks_is_the_trunk():
    found = fl.groups(eqx_net())
    assert found.names == ["stem", "layers.0", "layers.1", "layers.2", "head"]
    assert "A.layers.2.bias" in found["stem"].leaf_names
    assert found["head"].leaf_names == ("head.weight", "head.bias")


def test_plain_list_without_owner_holds_the_blocks():
    tree = {"embed": {"w": jnp.ones((3, 4))},
            "blocks": [{"w": jnp.ones((4, 4)), "b": jnp.ones(4)} for _ in range(3)],
            "out": {"w": jnp.ones((4, 2))}}
    assert all(leaf.owners == () for leaf in fl.view(tree))
    assert fl.groups(tree).names == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]


def test_root_list_of_equinox_layers_is_a_block_stack():
    keys = jax.random.split(jax.random.key(0), 3)
    layers = [eqx.nn.Linear(4, 4, key=k) for k in keys]
    assert fl.groups(layers).names == ["0", "1", "2"]


def test_linen_params_of_two_families_need_an_explicit_order():
    with pytest.raises(fl.GroupError, match="cannot be known"):
        fl.groups(linen_style_params())
    spec = ["params.Dense_0", "params.Block_0", "params.Block_1", "params.Block_2",
            "params.Dense_1"]
    assert fl.groups(linen_style_params(), spec=spec).names == spec


def test_nnx_blocks_in_a_list_are_the_trunk():
    assert fl.groups(NnxNet()).names == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]


def test_explicit_groups_from_selectors():
    found = fl.groups(eqx_net(), spec=["stem | A", "layers", "head"], names=["in", "mid", "out"])
    assert found.names == ["in", "mid", "out"]
    assert found.source == "explicit"
    assert "layers.2.fc2.bias" in found["mid"].leaf_names


def test_lock_returns_the_plan_and_leaves_the_model_unchanged():
    model = eqx_net()
    before = jax.tree_util.tree_leaves(model)
    plan = fl.lock(model, unlocked_groups=2)
    assert isinstance(plan, fl.Plan)
    assert all(a is b for a, b in zip(jax.tree_util.tree_leaves(model), before))
    assert set(fl.mask(model, plan).trainable_names()) == {
        n for g in list(fl.groups(model))[-2:] for n in g.leaf_names}


def test_lock_with_explicit_groups():
    model = eqx_net()
    plan = fl.lock(model, 1, spec=["stem | A", "layers", "head"])
    trainable = fl.mask(model, plan, fl.Grouping(spec=["stem | A", "layers", "head"])).trainable_names()
    assert trainable == ["head.weight", "head.bias"]


def test_lock_beyond_the_number_of_groups_says_how_many():
    with pytest.raises(fl.GroupError, match="the model has 5 groups"):
        fl.lock(eqx_net(), unlocked_groups=6)


def test_torch_family_options_are_refused_for_jax_models():
    with pytest.raises(fl.GroupError, match="PyTorch model families only"):
        fl.groups(eqx_net(), tower="image")


def test_example_input_is_noted_as_not_traced():
    found = fl.groups(eqx_net(), example_input=jnp.ones(3))
    assert any("not traced" in note for note in found.notes)


def test_summary_counts_what_the_plan_keeps_trainable():
    model = eqx_net()
    head = sum(leaf.numel for leaf in fl.view(model) if leaf.name.startswith("head."))
    total = sum(leaf.numel for leaf in fl.view(model))
    assert fl.summary(model, fl.Plan.lock(1)).trainable == head
    assert fl.summary(model).trainable == total
