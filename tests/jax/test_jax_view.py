"""Tree views of Equinox modules, Flax NNX modules and plain pytrees."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_models import Block, Net, NnxNet, eqx_net, linen_style_params

import frostline as fl
from frostline.core.backend import backend_for


def test_equinox_key_paths_become_dotted_names():
    model = eqx_net()
    expected = [
        ".".join(str(getattr(k, "name", getattr(k, "idx", getattr(k, "key", None)))) for k in path)
        for path, leaf in jax.tree_util.tree_flatten_with_path(model)[0] if eqx.is_array(leaf)]
    assert list(fl.view(model).names) == expected
    assert "A.layers.0.weight" in fl.view(model)


def test_non_array_leaves_are_not_in_the_view():
    names = fl.view(eqx_net()).names
    assert not any(n.endswith(("activation", "scale", "final_activation")) for n in names)
    assert all(isinstance(fl.view(eqx_net())[n].shape, tuple) for n in names)


def test_owner_chain_lists_every_module_on_the_path():
    leaf = fl.view(eqx_net())["layers.1.fc2.weight"]
    assert [(o.path, o.cls) for o in leaf.owners] == [
        ("", Net), ("layers.1", Block), ("layers.1.fc2", eqx.nn.Linear)]


def test_same_array_at_two_paths_is_tied():
    shared = jnp.ones(3)
    view = fl.view({"a": shared, "b": shared, "c": jnp.ones(3)})
    assert view["b"].tied_to == ("a",)
    assert view["c"].tied_to == ()


def test_nnx_params_are_params_and_batch_stats_are_buffers():
    view = fl.view(NnxNet())
    assert view["blocks.0.lin.kernel"].kind == "param"
    assert view["blocks.0.bn.scale"].kind == "param"
    assert view["blocks.0.bn.mean"].kind == "buffer"
    assert view["blocks.0.bn.var"].kind == "buffer"


def test_nnx_leaves_follow_definition_order():
    names = fl.view(NnxNet()).names
    assert names[0] == "stem.kernel"
    assert names[-1] == "head.bias"
    assert names.index("blocks.2.lin.kernel") < names.index("head.kernel")


def test_nnx_owner_chain_uses_graph_paths():
    leaf = fl.view(NnxNet())["blocks.1.bn.mean"]
    assert [o.path for o in leaf.owners] == ["", "blocks", "blocks.1", "blocks.1.bn"]
    assert leaf.owners[-1].class_name == "BatchNorm"


def test_linen_params_dict_has_dict_key_names_and_owners_from_automatic_names():
    view = fl.view(linen_style_params())
    assert view.names[:2] == ("params.Block_0.Dense_0.bias", "params.Block_0.Dense_0.kernel")
    owners = view["params.Block_1.LayerNorm_0.scale"].owners
    assert [(o.path, o.class_name) for o in owners] == [
        ("params.Block_1", "Block"), ("params.Block_1.LayerNorm_0", "LayerNorm")]


def test_numpy_pytree_is_handled_by_the_jax_backend():
    tree = [{"w": np.ones((2, 2), np.float32)}, {"w": np.zeros(2, np.float32)}]
    assert backend_for(tree).name == "jax"
    assert fl.view(tree).names == ("0.w", "1.w")


def test_pytree_with_a_non_array_leaf_is_refused():
    with pytest.raises(fl.BackendError, match="does not know how to handle"):
        fl.view({"w": jnp.ones(2), "lr": 0.1})


def test_nnx_order_survives_a_jitted_call_that_reassigns_attributes():
    from flax import nnx

    model = NnxNet()
    first = fl.view(model).names
    nnx.jit(lambda m: m(jnp.ones((2, 3))))(model)
    assert fl.view(model).names == first


def test_eqx_shared_weights_are_tied_and_a_split_freeze_is_refused():
    k1, k2 = jax.random.split(jax.random.key(0))
    shared = eqx.nn.Shared((eqx.nn.Embedding(5, 4, key=k1), eqx.nn.Linear(4, 5, key=k2)),
                           lambda p: p[1].weight, lambda p: p[0].weight)
    view = fl.view(shared)
    assert view["pytree.1.weight"].tied_to == ("pytree.0.weight",)
    with pytest.raises(fl.TiedWeightError, match="'pytree.0.weight' and 'pytree.1.weight'"):
        fl.mask(shared, fl.Plan().freeze("pytree.0"))
    plan = fl.Plan().freeze("pytree.0 | pytree.1.weight")
    trainable, _ = fl.partition(shared, plan)
    assert trainable.pytree[0].weight is None and trainable.pytree[1].bias is not None
    with fl.guard(shared, plan) as snap:
        snap.update(shared)


def test_eqx_shared_with_a_computed_get_is_refused():
    k1, k2 = jax.random.split(jax.random.key(0))
    shared = eqx.nn.Shared((eqx.nn.Embedding(5, 4, key=k1), eqx.nn.Linear(5, 4, key=k2)),
                           lambda p: p[1].weight, lambda p: jnp.transpose(p[0].weight))
    with pytest.raises(fl.BackendError, match="computed value"):
        fl.view(shared)
