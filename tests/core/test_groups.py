"""Layer groups built from tree views: explicit selectors, automatic detection, ties, lookup."""

from __future__ import annotations

import dataclasses

import pytest

import frostline as fl
from frostline import GroupError
from frostline.core.grouping import attach_buffers, auto_groups, build_groups, groups_from_selectors
from frostline.core.leaves import TreeView


def blocks_view(make_view, depth=3):
    names = ["patch.weight", "patch.bias"]
    classes = {"patch": "Linear", "blocks": "ModuleList", "norm": "LayerNorm", "head": "Linear"}
    for i in range(depth):
        names += [f"blocks.{i}.attn.qkv.weight", f"blocks.{i}.mlp.fc1.weight",
                  f"blocks.{i}.norm.weight"]
        classes.update({f"blocks.{i}": "Block", f"blocks.{i}.attn": "Attention",
                        f"blocks.{i}.attn.qkv": "Linear", f"blocks.{i}.mlp": "MLP",
                        f"blocks.{i}.mlp.fc1": "Linear", f"blocks.{i}.norm": "LayerNorm"})
    names += ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    return make_view(names, classes)


def test_auto_groups_are_stem_blocks_head_in_order(make_view):
    view = blocks_view(make_view)
    found = auto_groups(view)
    assert found.names == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert [g.index for g in found] == [0, 1, 2, 3, 4]
    assert found["stem"].leaf_names == ("patch.weight", "patch.bias")
    assert found["blocks.1"].leaf_names == (
        "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc1.weight", "blocks.1.norm.weight")
    assert found["head"].leaf_names == ("norm.weight", "norm.bias", "head.weight", "head.bias")
    assert found.source == "auto"


def test_auto_groups_partition_the_leaves(make_view):
    view = blocks_view(make_view, depth=5)
    found = auto_groups(view)
    listed = [n for g in found for n in g.leaf_names]
    assert sorted(listed) == sorted(view.names)
    assert len(listed) == len(set(listed))


def test_auto_groups_follow_execution_order_when_given(make_view):
    view = blocks_view(make_view)
    # The head module runs first here (as if the model were defined out of order).
    order = {"": 0, "head": 1, "patch": 2, "blocks.0": 3, "blocks.1": 4, "blocks.2": 5,
             "norm": 6}
    found = auto_groups(view, order)
    assert found.names[0] == "stem"
    # Membership follows execution; within a group leaves are listed in model order.
    assert found["stem"].leaf_names == ("patch.weight", "patch.bias", "head.weight", "head.bias")
    assert found.groups[-1].leaf_names == ("norm.weight", "norm.bias")


def test_auto_groups_without_repeated_blocks_is_one_group(make_view):
    view = make_view(["a.weight", "b.weight"], {"a": "Linear", "b": "LayerNorm"})
    found = auto_groups(view)
    assert found.names == ["all"]
    assert found.groups[0].leaf_names == ("a.weight", "b.weight")


def test_a_sequential_without_repeated_blocks_is_grouped_in_declared_order(make_view):
    view = make_view(["0.weight", "0.bias", "1.weight", ("1.running_mean", "buffer", (2,)),
                      "2.weight", "3.weight"],
                     {"": "Sequential", "0": "Linear", "1": "BatchNorm2d", "2": "Embedding",
                      "3": "LayerNorm"})
    found = auto_groups(view)
    assert [g.leaf_names for g in found] == [
        ("0.weight", "0.bias", "1.weight", "1.running_mean"), ("2.weight", "3.weight")]
    assert found.source == "auto"


def test_group_parameter_names_exclude_buffers(toy_view, toy_groups):
    head = toy_groups["head"]
    assert head.parameter_names == ("bn.weight", "bn.bias", "head.weight", "head.bias")
    assert set(head.leaf_names) - set(head.parameter_names) == {
        "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}


def test_group_modules_are_the_smallest_covering_module_set(toy_groups):
    assert toy_groups["stem"].modules == ("embed", "A")
    assert toy_groups["layer0"].modules == ("encoder.layer.0",)


def test_overlapping_explicit_groups_are_refused_naming_both_and_a_leaf(toy_view):
    # A leaf silently joining the first group that matches hid mistakes in a spec.
    with pytest.raises(GroupError, match=r"group selectors 0 \('name:weight'\) and 1 \('\*\*'\) "
                       r"both select 'embed\.weight'; groups are disjoint"):
        groups_from_selectors(toy_view, ["name:weight", "**"], names=["weights", "rest"])
    found = groups_from_selectors(toy_view, ["name:weight", "!name:weight"],
                                  names=["weights", "rest"])
    assert all(n.endswith("weight") for n in found["weights"].leaf_names)
    assert not any(n.endswith("weight") for n in found["rest"].leaf_names)
    assert found.unmatched == ()


def test_two_groups_with_one_name_are_refused(toy_view):
    with pytest.raises(GroupError, match=r"groups 0 and 2 are both named 'x'; give every group"):
        groups_from_selectors(toy_view, ["A", "head", "embed"], names=["x", "y", "x"])


def test_explicit_groups_report_leaves_no_selector_matched(toy_view):
    found = groups_from_selectors(toy_view, ["A", "head"])
    assert set(found.unmatched) == set(toy_view.names) - set(found["A"].leaf_names) - set(
        found["head"].leaf_names)
    assert "matched none" in found.notes[0]


def test_explicit_group_matching_nothing_is_an_error(toy_view):
    with pytest.raises(fl.GroupError, match=r"group 1 \(hed\) matches nothing.*closest: 'head'"):
        groups_from_selectors(toy_view, ["A", "hed"])


def test_explicit_groups_need_selectors_and_matching_names(toy_view):
    with pytest.raises(fl.GroupError, match="at least one selector"):
        groups_from_selectors(toy_view, [])
    with pytest.raises(fl.GroupError, match="got 1 group names for 2 selectors"):
        groups_from_selectors(toy_view, ["A", "head"], names=["x"])


def test_groups_lookup_by_name_and_index(toy_groups):
    assert toy_groups[-1].name == "head"
    assert toy_groups.index_of("encoder.layer.1.norm.bias") == 2
    assert toy_groups.index_of("absent") is None
    assert list(toy_groups.indices(slice(1, None))) == [1, 2, 3]
    with pytest.raises(fl.GroupError, match=r"no group named 'neck'; the model's groups are"):
        toy_groups["neck"]
    with pytest.raises(fl.GroupError, match=r"out of range: the model has 4 groups.*-4 to 3"):
        toy_groups[4]


def tied_view(make_view):
    base = make_view(["emb.weight", "blocks.0.weight", "blocks.1.weight", "out.weight"],
                     {"emb": "Embedding", "blocks.0": "Linear", "blocks.1": "Linear",
                      "out": "Linear"})
    leaves = list(base.leaves)
    leaves[0] = dataclasses.replace(leaves[0], tied_to=("out.weight",))
    leaves[3] = dataclasses.replace(leaves[3], tied_to=("emb.weight",))
    return TreeView(tuple(leaves))


def test_aliases_of_a_shared_tensor_join_the_group_of_its_canonical_name(make_view):
    view = tied_view(make_view)
    found = build_groups(view, [["emb.weight"], ["blocks.0.weight", "blocks.1.weight"],
                                ["out.weight"]], ["stem", "body", "head"], "explicit")
    assert found.names == ["stem", "body"]
    assert found["stem"].leaf_names == ("emb.weight",)
    assert found["stem"].aliases == ("out.weight",)
    assert [g.index for g in found] == [0, 1]
    assert "dropped" in found.notes[-1]


def test_auto_groups_with_tied_weights_stay_a_partition(make_view):
    view = tied_view(make_view)
    found = auto_groups(view)
    listed = [n for g in found for n in (*g.leaf_names, *g.aliases)]
    assert len(listed) == len(set(listed)) == 4
    canonical = [n for g in found for n in g.leaf_names]
    assert sorted(canonical) == sorted(n for n, c in view.canonical.items() if n == c)


def test_attach_buffers_puts_stats_with_their_module(toy_view):
    params = [leaf.name for leaf in toy_view.params()]
    members = attach_buffers(toy_view, [params[:-4], params[-4:]])
    assert members[1][-3:] == ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
