"""``fl.filter_spec(model, plan)`` is the Equinox filter spec of the four freezing patterns of the guide."""

from __future__ import annotations

import equinox as eqx
import jax
import pytest
from jax_models import eqx_net

import frostline as fl

# --- the guide's four functions, written as the guide writes them -------------------------------

def filter_by_name(model, names):
    """False for every leaf with a key whose ``.name`` is in ``names`` (parameter or module)."""
    def keep(path, _):
        return not any(getattr(key, "name", None) in names for key in path)

    return jax.tree_util.tree_map_with_path(keep, model)


def filter_all_modules_by_type(model, target_types):
    """Each module of ``target_types`` is one spec leaf, mapped to False; the rest True."""
    return jax.tree_util.tree_map_with_path(
        lambda _, node: not isinstance(node, target_types), model,
        is_leaf=lambda node: isinstance(node, target_types))


def filter_all_modules_by_class_name(model, class_names):
    """As by type, comparing ``node.__class__.__name__`` so the class need not be imported."""
    return jax.tree_util.tree_map_with_path(
        lambda _, node: node.__class__.__name__ not in class_names, model,
        is_leaf=lambda node: node.__class__.__name__ in class_names)


def trainable_arrays(model, spec) -> set[str]:
    """Dotted names of the array leaves ``spec`` keeps (prefix specs broadcast as Equinox does)."""
    kept = eqx.filter(model, spec)
    return {".".join(str(getattr(k, "name", getattr(k, "idx", None))) for k in path)
            for path, leaf in jax.tree_util.tree_flatten_with_path(kept)[0] if eqx.is_array(leaf)}


MODES = {
    "name bias": (lambda m: filter_by_name(m, ("bias",)), fl.Plan().freeze("name:bias")),
    "module name A": (lambda m: filter_by_name(m, ("A",)), fl.Plan().freeze(fl.name("A"))),
    "module type MLP": (lambda m: filter_all_modules_by_type(m, eqx.nn.MLP),
                        fl.Plan().freeze(fl.module_type(eqx.nn.MLP))),
    "class name MLP": (lambda m: filter_all_modules_by_class_name(m, ("MLP",)),
                       fl.Plan().freeze("class:MLP")),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_plan_mask_agrees_with_the_guide_on_every_array_leaf(mode):
    model = eqx_net()
    reference, plan = MODES[mode]
    ours = fl.filter_spec(model, plan)
    assert trainable_arrays(model, ours) == trainable_arrays(model, reference(model))
    assert trainable_arrays(model, ours) != set(fl.view(model).names)


def test_filter_spec_has_the_model_structure_and_false_for_non_arrays():
    model = eqx_net()
    spec = fl.filter_spec(model, fl.Plan().freeze("name:bias"))
    assert jax.tree_util.tree_structure(spec) == jax.tree_util.tree_structure(model)
    assert spec.A.activation is False
    assert spec.A.layers[0].weight is True and spec.A.layers[0].bias is False


def test_same_names_as_by_name_filter_directly():
    model = eqx_net()
    reference = filter_by_name(model, ("bias",))
    ours = fl.filter_spec(model, fl.Plan().freeze("name:bias"))
    pairs = zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(reference),
                jax.tree_util.tree_leaves(ours))
    assert all(ref == mine for leaf, ref, mine in pairs if eqx.is_array(leaf))


def test_selector_typo_is_an_error_not_an_empty_freeze():
    with pytest.raises(fl.SelectorError, match="closest: 'class:MLP'"):
        fl.filter_spec(eqx_net(), fl.Plan().freeze("class:MLPP"))
