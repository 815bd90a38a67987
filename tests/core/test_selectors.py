"""Selectors over leaves: each kind, their combinations and the public constructors."""

from __future__ import annotations

import pytest

import frostline as fl
from frostline.core.selectors import MatchContext


def picked(selector, view, groups=None):
    hits = fl.parse(selector).select(MatchContext(view, groups)) if isinstance(
        selector, str) else selector.select(MatchContext(view, groups))
    return [leaf.name for leaf, hit in zip(view, hits) if hit]


def names_where(view, predicate):
    return [leaf.name for leaf in view if predicate(leaf)]


def test_name_matches_parameter_names_anywhere(toy_view):
    expected = names_where(toy_view, lambda leaf: leaf.name.endswith(".bias"))
    assert picked(fl.name("bias"), toy_view) == expected
    assert len(expected) == 8


def test_name_matches_module_names_and_takes_their_subtree(toy_view):
    assert picked(fl.name("A"), toy_view) == [
        "A.fc1.weight", "A.fc1.bias", "A.fc2.weight", "A.fc2.bias"]


def test_name_matches_whole_keys_only(toy_view):
    # "fc" is a prefix of the keys "fc1"/"fc2", not a key: nothing matches.
    assert picked(fl.name("fc"), toy_view) == []


def test_name_with_several_names_is_a_union(toy_view):
    assert picked(fl.name("embed", "head"), toy_view) == [
        "embed.weight", "head.weight", "head.bias"]


def test_name_accepts_glob_wildcards(toy_view):
    assert picked(fl.name("running_*"), toy_view) == ["bn.running_mean", "bn.running_var"]


def test_path_star_stays_within_one_segment(toy_view):
    assert picked(fl.path("A.*.bias"), toy_view) == ["A.fc1.bias", "A.fc2.bias"]


def test_path_glob_naming_a_module_selects_its_subtree(toy_view):
    assert picked(fl.path("encoder.layer.*"), toy_view) == names_where(
        toy_view, lambda leaf: leaf.name.startswith("encoder.layer."))
    assert picked(fl.path("encoder.layer.1.norm"), toy_view) == [
        "encoder.layer.1.norm.weight", "encoder.layer.1.norm.bias"]


def test_path_does_not_match_a_prefix_of_a_key(toy_view):
    # "encoder.lay" names no module: the subtree rule applies to whole segments only.
    assert picked(fl.path("encoder.lay"), toy_view) == []


def test_path_double_star_spans_any_number_of_segments(toy_view):
    assert picked(fl.path("**.qkv.weight"), toy_view) == [
        "encoder.layer.0.attn.qkv.weight", "encoder.layer.1.attn.qkv.weight"]
    assert picked(fl.path("encoder.**.bias"), toy_view) == names_where(
        toy_view, lambda leaf: leaf.name.startswith("encoder.") and leaf.name.endswith(".bias"))
    assert picked(fl.path("**"), toy_view) == list(toy_view.names)


def test_path_question_mark_matches_one_character(toy_view):
    assert picked(fl.path("A.fc?.weight"), toy_view) == ["A.fc1.weight", "A.fc2.weight"]


def test_regex_searches_the_dotted_name(toy_view):
    assert picked(fl.regex(r"layer\.1\..*weight$"), toy_view) == [
        "encoder.layer.1.attn.qkv.weight", "encoder.layer.1.norm.weight"]


def test_invalid_regex_fails_where_it_is_written():
    with pytest.raises(fl.SelectorError, match="invalid regular expression"):
        fl.regex("(unclosed")


def test_module_type_matches_any_owning_module(toy_view, module_classes):
    assert picked(fl.module_type(module_classes["Block"]), toy_view) == names_where(
        toy_view, lambda leaf: leaf.name.startswith("encoder.layer."))


def test_module_type_is_isinstance_so_subclasses_match(toy_view, module_classes):
    assert picked(fl.module_type(module_classes["LayerNorm"]), toy_view) == [
        "encoder.layer.0.norm.weight", "encoder.layer.0.norm.bias",
        "encoder.layer.1.norm.weight", "encoder.layer.1.norm.bias"]


def test_module_type_string_matches_class_or_base_names(toy_view):
    assert picked(fl.module_type("LayerNorm"), toy_view) == picked(
        "encoder.layer.*.norm", toy_view)
    assert picked(fl.module_type("FancyLayerNorm"), toy_view) == [
        "encoder.layer.1.norm.weight", "encoder.layer.1.norm.bias"]


def test_class_name_is_exact_and_ignores_bases(toy_view):
    assert picked(fl.class_name("LayerNorm"), toy_view) == [
        "encoder.layer.0.norm.weight", "encoder.layer.0.norm.bias"]
    assert picked(fl.class_name("MLP"), toy_view) == picked(fl.name("A"), toy_view)


def test_class_name_accepts_the_qualified_name(toy_view, module_classes):
    mlp = module_classes["MLP"]
    qualified = f"{mlp.__module__}.{mlp.__qualname__}"
    assert picked(fl.class_name(qualified), toy_view) == picked(fl.name("A"), toy_view)


def test_group_by_index_negative_index_slice_and_name(toy_view, toy_groups):
    layer1 = list(toy_groups["layer1"].leaf_names)
    head = list(toy_groups["head"].leaf_names)
    assert picked(fl.group(2), toy_view, toy_groups) == layer1
    assert picked(fl.group(-1), toy_view, toy_groups) == head
    assert picked(fl.group(slice(-2, None)), toy_view, toy_groups) == layer1 + head
    assert picked(fl.group("layer1"), toy_view, toy_groups) == layer1


def test_group_out_of_range_raises_group_error_with_the_count(toy_view, toy_groups):
    with pytest.raises(fl.GroupError, match="the model has 4 groups"):
        picked(fl.group(7), toy_view, toy_groups)


def test_group_without_groups_says_what_to_pass(toy_view):
    with pytest.raises(fl.SelectorError, match="needs layer groups"):
        picked(fl.group(0), toy_view)


def test_kind_separates_parameters_from_buffers(toy_view):
    assert picked(fl.kind("buffer"), toy_view) == [
        "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert picked(fl.kind("param"), toy_view) == [leaf.name for leaf in toy_view.params()]


def test_kind_rejects_unknown_kinds():
    with pytest.raises(fl.SelectorError, match="unknown kind 'state'"):
        fl.kind("state")


def test_where_calls_the_predicate_on_each_leaf(toy_view):
    scalar = fl.where(lambda leaf: leaf.shape == (), "scalar")
    assert picked(scalar, toy_view) == ["bn.num_batches_tracked"]
    assert str(scalar) == "<where scalar>"


def test_everything_selects_every_leaf(toy_view):
    assert picked(fl.everything(), toy_view) == list(toy_view.names)


def test_and_or_not_combine_as_set_operations(toy_view):
    bias = set(picked(fl.name("bias"), toy_view))
    mlp = set(picked(fl.name("A"), toy_view))
    assert set(picked(fl.name("bias") & fl.name("A"), toy_view)) == bias & mlp
    assert set(picked(fl.name("bias") | fl.name("A"), toy_view)) == bias | mlp
    assert set(picked(~fl.name("bias"), toy_view)) == set(toy_view.names) - bias


def test_operators_accept_strings_on_either_side(toy_view):
    assert picked("name:A" & fl.name("bias"), toy_view) == ["A.fc1.bias", "A.fc2.bias"]
    assert picked(fl.name("A") & "name:bias", toy_view) == ["A.fc1.bias", "A.fc2.bias"]
    assert picked("head" | fl.name("embed"), toy_view) == [
        "embed.weight", "head.weight", "head.bias"]


@pytest.mark.parametrize("build, args", [
    (fl.name, ()), (fl.name, ("",)), (fl.path, (3,)), (fl.class_name, (None,)),
    (fl.module_type, ()), (fl.module_type, (3,)), (fl.group, (1.5,)), (fl.group, (True,)),
    (fl.where, ("not callable",)),
])
def test_constructors_reject_bad_arguments(build, args):
    with pytest.raises(fl.SelectorError, match="expects"):
        build(*args)


def test_plan_methods_accept_selector_objects_or_strings():
    assert fl.Plan().freeze(fl.name("bias")) == fl.Plan().freeze("name:bias")
    assert fl.Plan().unfreeze(fl.path("encoder.layer.*")) == fl.Plan().unfreeze(
        "encoder.layer.*")


def test_non_selector_values_are_refused():
    with pytest.raises(fl.SelectorError, match="expected a selector or a selector string"):
        fl.Plan().freeze(42)


def test_slash_separated_flat_names_select_like_dotted_paths():
    from frostline.core.leaves import Leaf, Owner, TreeView

    class M:
        pass

    names = ["Transformer.encoderblock_0.w", "Transformer.encoderblock_1.w", "head.w"]
    view = TreeView(tuple(Leaf(n, tuple(n.split(".")), (Owner("", M),), (1,), "float32",
                               index=i) for i, n in enumerate(names)))
    hits = fl.parse("Transformer/encoderblock_0").select(MatchContext(view))
    assert [n for n, hit in zip(names, hits) if hit] == ["Transformer.encoderblock_0.w"]
