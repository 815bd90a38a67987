"""Flax Linen params and variables: groups that do not depend on dict key order, state that never trains."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_models import arrays_by_name
from linen_models import BnNet, Deep, Mixed, ViT, after_jitted_step, init

import frostline as fl

X = jnp.ones((2, 3))
IMAGE = jnp.ones((1, 8, 8, 3))


@pytest.fixture(scope="module")
def deep():
    fresh = init(Deep(), X)
    return fresh, after_jitted_step(Deep(), fresh, X)


@pytest.fixture(scope="module")
def vit():
    fresh = init(ViT(), IMAGE)
    return fresh, jax.jit(lambda v: v)(fresh)


def test_jit_hands_back_sorted_keys(deep):
    fresh, stepped = deep
    assert list(fresh["params"])[:3] == ["Dense_0", "Dense_1", "Dense_2"]
    assert list(stepped["params"])[:3] == ["Dense_0", "Dense_1", "Dense_10"]


def test_lock_trains_the_same_leaves_after_a_jitted_optax_step(deep):
    fresh, stepped = deep
    expected = fl.mask(fresh, fl.Plan.lock(2)).trainable_names()
    assert sorted(expected) == sorted(f"params.Dense_{i}.{k}" for i in (11, 12)
                                      for k in ("kernel", "bias"))
    assert sorted(fl.mask(stepped, fl.Plan.lock(2)).trainable_names()) == sorted(expected)
    trainable, _ = fl.partition(stepped, fl.Plan.lock(2))
    assert sorted(arrays_by_name(trainable)) == sorted(expected)


def test_numbered_layers_are_ordered_by_number(deep):
    _, stepped = deep
    found = fl.groups(stepped)
    assert found.names == [f"params.Dense_{i}" for i in range(13)]
    assert any("never by the order a dict has" in note for note in found.notes)


def test_layer_decay_labels_order_numbered_layers_numerically(deep):
    fresh, stepped = deep
    for variables in (fresh, stepped):
        labels, scales = fl.layer_decay_labels(variables, 0.5)
        by_name = labels.as_dict()
        low, high = by_name["params.Dense_2.kernel"], by_name["params.Dense_10.kernel"]
        assert scales[low] == 0.5 ** 10 and scales[high] == 0.5 ** 2
        assert labels(stepped) == labels(fresh)


def test_thaw_after_a_jitted_step_thaws_the_next_layer_down(deep):
    _, stepped = deep
    schedule = fl.UnfreezeSchedule.gradual(every=1, start=1)
    n = len(fl.groups(stepped))
    tx = optax.adamw(1e-2, weight_decay=0.1)
    trainable, _ = fl.partition(stepped, schedule.plan_at(0, n))
    trainable, _, _ = fl.thaw(stepped, schedule.plan_at(1, n), tx, tx.init(trainable))
    assert sorted(arrays_by_name(trainable)) == sorted(
        f"params.Dense_{i}.{k}" for i in (11, 12) for k in ("kernel", "bias"))


def test_big_vision_vit_is_ordered_by_role_after_jit(vit):
    fresh, sorted_keys = vit
    assert list(sorted_keys["params"]) == ["Transformer", "cls", "embedding", "head",
                                           "pos_embedding"]
    for variables in (fresh, sorted_keys):
        found = fl.groups(variables)
        assert found.names == ["stem", *(f"params.Transformer.encoderblock_{i}"
                                         for i in range(12)), "head"]
        assert {"params.cls", "params.pos_embedding", "params.embedding.kernel"} <= set(
            found["stem"].leaf_names)
        assert set(found["head"].leaf_names) == {
            "params.Transformer.encoder_norm.scale", "params.Transformer.encoder_norm.bias",
            "params.head.kernel", "params.head.bias"}


def test_flat_vit_dict_keeps_pos_embedding_out_of_the_head():
    """A ViT's params as a flat dict of arrays and modules, keys sorted."""
    params = jax.tree_util.tree_map(jnp.asarray, {
        "cls": np.zeros((1, 1, 4)), "embedding": {"kernel": np.ones((3, 4))},
        "encoderblock_0": {"Dense_0": {"kernel": np.ones((4, 4))}},
        "encoderblock_1": {"Dense_0": {"kernel": np.ones((4, 4))}},
        "encoderblock_10": {"Dense_0": {"kernel": np.ones((4, 4))}},
        "head": {"kernel": np.ones((4, 2))}, "pos_embedding": np.zeros((1, 5, 4))})
    found = fl.groups(params)
    assert found.names == ["stem", "encoderblock_0", "encoderblock_1", "encoderblock_10", "head"]
    assert "pos_embedding" in found["stem"].leaf_names
    assert found["head"].leaf_names == ("head.kernel",)


def test_unknowable_order_asks_for_spec():
    variables = init(Mixed(), X)
    with pytest.raises(fl.GroupError, match=r"cannot be known.*Block_\*, Dense_\*.*spec="):
        fl.groups(variables)
    with pytest.raises(fl.GroupError, match="spec="):
        fl.mask(variables, fl.Plan.lock(1))
    spec = ["params.Dense_0", "params.Block_*", "params.Dense_1"]
    assert fl.groups(variables, spec=spec).names == spec


def test_linen_modules_are_known_by_their_automatic_names():
    variables = init(Mixed(), X)
    frozen = fl.mask(variables, fl.Plan().freeze("type:LayerNorm")).frozen_names()
    assert frozen == [f"params.Block_{i}.LayerNorm_0.{k}" for i in range(3)
                      for k in ("bias", "scale")]


# --- Linen variables: {"params", "batch_stats"} ---------------------------------------------


@pytest.fixture(scope="module")
def bn_variables():
    return init(BnNet(), X)


def test_batch_stats_are_state_and_never_train(bn_variables):
    view = fl.view(bn_variables)
    assert {leaf.kind for leaf in view if leaf.path[0] == "batch_stats"} == {"buffer"}
    trainable, frozen = fl.partition(bn_variables, fl.Plan())
    assert not any(k.startswith("batch_stats") for k in arrays_by_name(trainable))
    assert set(arrays_by_name(frozen)) == {
        f"batch_stats.BnBlock_{i}.BatchNorm_0.{s}" for i in range(3) for s in ("mean", "var")}


def test_groups_of_variables_follow_params_and_statistics_join_their_module(bn_variables):
    found = fl.groups(bn_variables)
    assert found.names == ["stem", "params.BnBlock_0", "params.BnBlock_1", "params.BnBlock_2",
                           "head"]
    assert set(found["params.BnBlock_1"].leaf_names) == {
        *(f"params.BnBlock_1.Dense_0.{k}" for k in ("kernel", "bias")),
        *(f"params.BnBlock_1.BatchNorm_0.{k}" for k in ("scale", "bias")),
        *(f"batch_stats.BnBlock_1.BatchNorm_0.{k}" for k in ("mean", "var"))}


def test_lock_one_on_variables_trains_only_head_params(bn_variables):
    plan = fl.Plan.lock(2)
    trainable, _ = fl.partition(bn_variables, plan)
    assert set(arrays_by_name(trainable)) == {
        "params.head.kernel", "params.head.bias",
        *(f"params.BnBlock_2.{m}.{k}" for m, ks in (("Dense_0", ("kernel", "bias")),
                                                  ("BatchNorm_0", ("scale", "bias")))
          for k in ks)}


def test_frozen_bn_inference_on_linen_says_what_to_do(bn_variables):
    with pytest.raises(fl.BackendError, match="use_running_average"):
        fl.frozen_bn_inference(bn_variables, fl.Plan.lock(1, freeze_bn_stats=True))


def test_frozen_dict_variables_are_handled_like_dicts(deep):
    from flax.core import FrozenDict

    _, stepped = deep
    frozen = FrozenDict(stepped)
    assert fl.groups(frozen).names == fl.groups(stepped).names
    trainable, _ = fl.partition(frozen, fl.Plan.lock(2))
    assert isinstance(trainable, FrozenDict)
    assert sorted(arrays_by_name(trainable)) == sorted(
        f"params.Dense_{i}.{k}" for i in (11, 12) for k in ("kernel", "bias"))


def test_guard_watches_batch_stats_of_batchnorms_with_frozen_params(bn_variables):
    from linen_models import BnNet

    plan = fl.Plan.lock(2)
    with pytest.raises(fl.GuardError, match=r"batch_stats\.BnBlock_0\.BatchNorm_0\.mean") as info:
        with fl.guard(bn_variables, plan, buffers=True) as snap:
            _, updates = BnNet().apply(bn_variables, X, mutable=["batch_stats"])
            snap.update({**bn_variables, **updates})
    assert "BnBlock_2" not in str(info.value)


def test_big_vision_slash_names_select_the_block(vit):
    _, variables = vit
    frozen = fl.mask(variables, fl.Plan().freeze("params/Transformer/encoderblock_1")
                     ).frozen_names()
    assert frozen and all(n.startswith("params.Transformer.encoderblock_1.") for n in frozen)


def test_type_selector_on_a_plain_dict_says_dicts_carry_no_classes():
    params = {"enc": {"w": jnp.ones((2, 2))}, "dec": {"w": jnp.ones((2, 2))}}
    with pytest.raises(fl.SelectorError, match="plain pytree.*no module classes.*by path or name"):
        fl.mask(params, fl.Plan().freeze("type:Dense"))
    with pytest.raises(fl.SelectorError, match="no module classes"):
        fl.mask(params, fl.Plan().freeze("class:Dense"))
