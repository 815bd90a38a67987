"""fl.param_groups: trainable parameters only, selective weight decay, timm-parity layer decay."""

from __future__ import annotations

import pytest
import torch
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from tiny_models import tiny_resnet, tiny_vit
from torch import nn

import frostline as fl


def per_param(model: nn.Module, groups: list[dict]) -> dict[str, tuple[float, float]]:
    """{name: (lr_scale, weight_decay)} of every parameter placed in ``groups``."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in groups:
        for param in group["params"]:
            assert names[id(param)] not in out
            out[names[id(param)]] = (group.get("lr_scale", 1.0), group["weight_decay"])
    return out


@pytest.mark.parametrize("make", [tiny_vit, tiny_resnet], ids=["vit", "resnet"])
@pytest.mark.parametrize("layer_decay", [0.5, 0.75, 0.9])
def test_layer_decay_matches_timm_create_optimizer_v2(make, layer_decay):
    model = make()
    timm_opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05,
                                   layer_decay=layer_decay)
    ours = fl.param_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=layer_decay)
    assert per_param(model, ours) == per_param(model, timm_opt.param_groups)
    assert len({scale for scale, _ in per_param(model, ours).values()}) == len(fl.groups(model))


@pytest.mark.parametrize("make", [tiny_vit, tiny_resnet], ids=["vit", "resnet"])
def test_weight_decay_without_layer_decay_matches_timm(make):
    model = make()
    timm_opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    ours = fl.param_groups(model, lr=1e-3, weight_decay=0.05)
    assert per_param(model, ours) == per_param(model, timm_opt.param_groups)


@pytest.mark.parametrize("unlocked", [1, 3])
def test_frozen_parameters_do_not_shift_layer_scales(unlocked):
    model = tiny_vit(depth=4)
    full = per_param(model, fl.param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.7))
    fl.lock(model, unlocked_groups=unlocked)
    locked = per_param(model, fl.param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.7))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(locked) == trainable
    assert locked == {n: full[n] for n in trainable}
    timm_groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.7,
                                           no_weight_decay_list=model.no_weight_decay())
    assert locked == per_param(model, timm_groups)


def test_group_lr_is_base_lr_times_scale_and_drives_a_plain_sgd_step():
    model = tiny_vit(depth=4)
    fl.lock(model, unlocked_groups=3)
    groups = fl.param_groups(model, lr=0.1, layer_decay=0.5)
    assert all(g["lr"] == pytest.approx(0.1 * g["lr_scale"]) for g in groups)
    optimizer = torch.optim.SGD(groups, lr=123.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    for group in groups:
        for param in group["params"]:
            name = next(n for n, p in model.named_parameters() if p is param)
            expected = before[name] - 0.1 * group["lr_scale"] * grads[name]
            torch.testing.assert_close(param.detach(), expected)
    assert {g["lr_scale"] for g in groups} == {0.25, 0.5, 1.0}


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.gain = nn.Parameter(torch.ones(4))
        self.table = nn.Parameter(torch.zeros(2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean(dim=(2, 3)) * self.gain
        return self.fc(self.norm(h)) + self.table.sum()


def decay_of(model: nn.Module, groups: list[dict]) -> dict[str, float]:
    return {n: wd for n, (_, wd) in per_param(model, groups).items()}


def test_default_no_decay_exempts_biases_norms_and_one_d_parameters():
    model = Mixed()
    decay = decay_of(model, fl.param_groups(model, lr=0.1, weight_decay=0.3))
    assert {n for n, wd in decay.items() if wd == 0.3} == {"conv.weight", "fc.weight", "table"}
    assert {n for n, wd in decay.items() if wd == 0.0} == {
        "conv.bias", "norm.weight", "norm.bias", "fc.bias", "gain"}


def test_no_decay_selector_string_replaces_the_default():
    model = Mixed()
    decay = decay_of(model, fl.param_groups(model, lr=0.1, weight_decay=0.3,
                                            no_decay="name:table | fc.*"))
    assert {n for n, wd in decay.items() if wd == 0.0} == {"table", "fc.weight", "fc.bias"}


def test_no_decay_none_decays_everything():
    model = Mixed()
    decay = decay_of(model, fl.param_groups(model, lr=0.1, weight_decay=0.3, no_decay=None))
    assert set(decay.values()) == {0.3}


def test_no_decay_typo_raises_instead_of_decaying_everything():
    with pytest.raises(fl.SelectorError, match=r"no_decay selector .*matches no parameter"):
        fl.param_groups(Mixed(), lr=0.1, weight_decay=0.3, no_decay="name:bais")


def test_model_without_trainable_parameters_raises():
    model = Mixed().requires_grad_(False)
    with pytest.raises(fl.PlanError, match="no parameter of the model is trainable"):
        fl.param_groups(model, lr=0.1)


def test_negative_rate_raises():
    with pytest.raises(fl.PlanError, match="weight_decay must be a finite non-negative"):
        fl.param_groups(Mixed(), lr=0.1, weight_decay=-1.0)
