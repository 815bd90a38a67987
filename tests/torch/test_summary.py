"""``fl.summary`` counts and ``fl.trainable_parameters`` on real models."""

from __future__ import annotations

import re

import timm
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

import frostline as fl


def manual_counts(model):
    """(trainable, total) elements, each tensor once, summed by hand."""
    seen, trainable, total = set(), 0, 0
    for _, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def wide_model():
    return nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 1024),
                         nn.Linear(1024, 7))


def test_total_line_has_exact_counts_with_thousands_separators():
    model = wide_model()
    fl.lock(model, unlocked_groups=1)
    trainable, total = manual_counts(model)
    assert (trainable, total) == (1024 * 7 + 7, 3 * (1024 * 1024 + 1024) + 1024 * 7 + 7)
    line = fl.summary(model).total_line
    assert line == f"trainable {trainable:,} / {total:,} ({100 * trainable / total:.1f}%)"
    assert re.fullmatch(r"trainable 7,175 / 3,155,975 \(0\.2%\)", line)


def test_summary_counts_tied_weights_once():
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50,
                                       n_positions=16, bos_token_id=0, eos_token_id=0))
    fl.lock(model, unlocked_groups=2)
    summary = fl.summary(model)
    assert (summary.trainable, summary.total) == manual_counts(model)
    assert summary.total == sum(p.numel() for p in model.parameters())
    assert summary.total < sum(
        p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def test_summary_rows_follow_the_groups_and_add_up():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    fl.lock(model, unlocked_groups=2, freeze_bn_stats=True)
    summary = fl.summary(model)
    found = fl.groups(model)
    assert [row.name for row in summary.rows] == found.names
    assert sum(row.params for row in summary.rows) == summary.total
    assert sum(row.trainable for row in summary.rows) == summary.trainable
    assert [row.trainable == row.params for row in summary.rows] == [
        False] * (len(found) - 2) + [True, True]
    params = dict(model.named_parameters())
    for row, group in zip(summary.rows, found):
        assert row.params == sum(params[n].numel() for n in group.parameter_names)
    assert all(row.frozen_bn == 0 for row in summary.rows[-2:])
    assert summary.rows[1].frozen_bn == sum(
        isinstance(m, nn.BatchNorm2d) for p, m in model.named_modules()
        if p.startswith(found.names[1] + "."))


def test_summary_prints_a_table_and_the_total_line():
    model = wide_model()
    fl.lock(model, unlocked_groups=1)
    text = str(fl.summary(model))
    assert text.splitlines()[-1] == fl.summary(model).total_line
    for name in fl.groups(model).names:
        assert name in text
    assert "3,155,975" not in text.splitlines()[0]


def test_summary_under_a_plan_does_not_change_the_model():
    model = wide_model()
    plan = fl.Plan().freeze("**").unfreeze("group:-1:")
    summary = fl.summary(model, plan)
    assert all(p.requires_grad for p in model.parameters())
    fl.apply(model, plan)
    assert (summary.trainable, summary.total) == manual_counts(model)


def test_trainable_parameters_yield_each_trainable_tensor_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Linear(4, 4), shared, nn.Linear(4, 2))
    model[1].requires_grad_(False)
    ids = [id(p) for p in fl.trainable_parameters(model)]
    assert ids == [id(shared.weight), id(shared.bias), id(model[3].weight), id(model[3].bias)]
    assert [n for n, _ in fl.trainable_named_parameters(model)] == [
        "0.weight", "0.bias", "3.weight", "3.bias"]


def test_trainable_parameters_feed_an_optimizer_with_only_trainable_tensors():
    model = wide_model()
    fl.lock(model, unlocked_groups=2)
    optimizer = torch.optim.SGD(fl.trainable_parameters(model), lr=0.1)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == (
        fl.summary(model).trainable)
