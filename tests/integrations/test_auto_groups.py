"""Automatic groups for models no family rule knows: stem, one group per trunk block, head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import frostline as fl


class Block(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Linear(width, width)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class HeadFirst(nn.Module):
    """Defines its head before its blocks and its stem last; runs stem, blocks, head."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.blocks = nn.ModuleList([Block() for _ in range(3)])
        self.stem = nn.Linear(4, 8)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Staged(nn.Module):
    """Stages and head are both Sequentials: only the stages are the trunk."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.stages = nn.Sequential(*[nn.Sequential(Block(), Block()) for _ in range(2)])
        self.head = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 2))

    def forward(self, x):
        x = self.stem(x).mean((2, 3))
        return self.head(self.stages(x))


def test_trunk_blocks_become_groups_between_stem_and_head():
    found = fl.groups(HeadFirst(), example_input=torch.zeros(1, 4))
    assert found.names == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert found.source == "auto"
    assert "auto: trunk is 3 x Block under blocks" in found.notes


def test_execution_order_puts_a_head_defined_first_last():
    model = HeadFirst()
    by_definition = fl.groups(model)
    assert "head.weight" in by_definition[0].leaf_names  # definition order is misleading here
    traced = fl.groups(model, example_input=torch.zeros(1, 4))
    assert traced["stem"].parameter_names == ("stem.weight", "stem.bias")
    assert traced["head"].parameter_names == ("head.weight", "head.bias")
    assert "auto: order from tracing the example input" in traced.notes


def test_lock_with_example_input_trains_the_head_only():
    model = HeadFirst()
    fl.lock(model, 1, example_input=torch.zeros(1, 4))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight",
                                                                          "head.bias"]


def test_a_sequential_head_is_not_mistaken_for_a_trunk_stage():
    found = fl.groups(Staged(), example_input=torch.zeros(1, 3, 8, 8))
    assert found.names == ["stem", "stages.0", "stages.1", "head"]
    assert found["head"].modules == ("head",)


class TwoLayers(nn.Module):
    """No repeated blocks and no declared order: the head is defined first but runs last."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)
        self.conv = nn.Conv1d(4, 3, 1)

    def forward(self, x):
        return self.head(self.conv(x).mean(-1))


def test_a_sequential_without_repeated_blocks_is_grouped_by_its_children():
    found = fl.groups(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Conv1d(3, 3, 1)))
    assert [g.parameter_names for g in found] == [("0.weight", "0.bias"), ("2.weight", "2.bias")]
    assert "in the order the Sequential '<root>' declares" in found.notes[0]


def test_lock_one_on_linear_batchnorm_linear_trains_only_the_last_linear():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    fl.lock(model, 1, freeze_bn_stats=True)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["2.weight", "2.bias"]
    assert fl.groups(model)[0].leaf_names == (
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked")
    model.train()
    before = model[1].running_mean.clone()
    model(torch.randn(5, 4))
    assert torch.equal(before, model[1].running_mean)


def test_parameterless_and_normalisation_children_join_the_layer_before_them():
    model = nn.Sequential(nn.BatchNorm1d(2, affine=False), nn.Linear(2, 3), nn.GELU(),
                          nn.LayerNorm(3), nn.Conv1d(3, 3, 1), nn.Dropout(), nn.Linear(3, 1))
    found = fl.groups(model)
    assert [g.parameter_names for g in found] == [
        ("1.weight", "1.bias", "3.weight", "3.bias"), ("4.weight", "4.bias"),
        ("6.weight", "6.bias")]
    assert found[0].leaf_names[:3] == ("0.running_mean", "0.running_var", "0.num_batches_tracked")


def test_a_module_without_blocks_or_declared_order_is_one_group_and_refuses_lock():
    model = TwoLayers()
    found = fl.groups(model)
    assert found.names == ["all"]
    assert "no repeated blocks and no declared layer order" in found.notes[0]
    with pytest.raises(fl.GroupError, match=r"cannot unlock 1 of the model's groups: it is one "
                                            r"group .* example_input="):
        fl.lock(model, 1)
    assert all(p.requires_grad for p in model.parameters())
    fl.lock(model, 0)
    assert not any(p.requires_grad for p in model.parameters())


def test_with_an_example_input_the_children_are_grouped_in_the_order_they_ran():
    model = TwoLayers()
    found = fl.groups(model, example_input=torch.zeros(1, 4, 5))
    assert [g.parameter_names for g in found] == [("conv.weight", "conv.bias"),
                                                  ("head.weight", "head.bias")]
    assert "in the order they ran (traced)" in found.notes[0]
    fl.lock(model, 1, example_input=torch.zeros(1, 4, 5))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight",
                                                                          "head.bias"]


def test_a_trace_that_fails_says_what_input_is_expected():
    with pytest.raises(fl.GroupError, match="tracing the example input on the meta device failed"):
        fl.groups(HeadFirst(), example_input=torch.zeros(1, 5))


def test_auto_overrides_a_family_rule():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = torchvision.models.resnet18()
    assert fl.groups(model).source == "torchvision rule"
    found = fl.groups(model, auto=True)
    assert found.source == "auto" and found.names == ["stem", "layer1", "layer2", "layer3",
                                                       "layer4", "head"]


def test_unknown_group_option_is_an_error():
    with pytest.raises(TypeError, match="towr"):
        fl.groups(HeadFirst(), towr="image")
    with pytest.raises(TypeError, match="towr"):
        fl.Grouping(towr="image")


def test_tower_as_a_module_path_groups_that_part_and_locks_within_it():
    model = nn.Sequential(HeadFirst(), nn.Linear(2, 2))
    found = fl.groups(model, tower="0", example_input=torch.zeros(1, 4))
    assert found.scope == ("0",) and found.names[0] == "0.stem"
    fl.lock(model, 0, tower="0", example_input=torch.zeros(1, 4))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["1.weight", "1.bias"]
