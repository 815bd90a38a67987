"""fl.partition / fl.combine / fl.functional_call: functional training with torch.func."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_vit
from torch import nn

import frostline as fl


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 30 * 30, 2))


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_partition_by_plan_puts_buffers_with_frozen_and_leaves_the_model_unchanged():
    model = small_cnn()
    trainable, frozen = fl.partition(model, fl.Plan().freeze("0.*"))
    assert list(trainable) == ["1.weight", "1.bias", "4.weight", "4.bias"]
    assert set(frozen) == {"0.weight", "0.bias", "1.running_mean", "1.running_var",
                           "1.num_batches_tracked"}
    assert trainable["4.weight"] is model[4].weight
    assert all(p.requires_grad for p in model.parameters())


def test_partition_without_plan_follows_requires_grad():
    model = small_cnn()
    model[4].requires_grad_(False)
    trainable, frozen = fl.partition(model)
    assert set(trainable) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert {"4.weight", "4.bias"} <= set(frozen)


def test_partition_with_group_plan_on_timm_model():
    model = tiny_vit()
    trainable, _ = fl.partition(model, fl.Plan.lock(2))
    groups = fl.groups(model)
    assert set(trainable) == {n for g in list(groups)[-2:] for n in g.parameter_names}


def test_torch_func_grad_differentiates_the_trainable_part_only():
    model = tiny_vit()
    trainable, frozen = fl.partition(model, fl.Plan.lock(1))
    x = images()

    def loss(params: dict) -> torch.Tensor:
        return fl.functional_call(model, params, frozen, (x,)).square().mean()

    grads = torch.func.grad(loss)(trainable)
    assert set(grads) == set(trainable)
    model.zero_grad()
    model(x).square().mean().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad)


def test_functional_sgd_step_leaves_frozen_tensors_identical():
    model = tiny_vit()
    trainable, frozen = fl.partition(model, fl.Plan.lock(2).with_bn(freeze_bn_stats=True))
    frozen_before = {n: t.detach().clone() for n, t in frozen.items()}
    trainable_before = {n: t.detach().clone() for n, t in trainable.items()}
    params = {n: t.detach() for n, t in trainable.items()}

    def loss(p: dict, x: torch.Tensor) -> torch.Tensor:
        return fl.functional_call(model, p, frozen, x).square().mean()

    for _ in range(2):
        grads = torch.func.grad(loss)(params, images())
        params = {n: p - 0.1 * grads[n] for n, p in params.items()}
    assert all(torch.equal(frozen[n], t) for n, t in frozen_before.items())
    assert all(not torch.equal(params[n], t) for n, t in trainable_before.items()
               if "head" in n or "blocks.2" in n)
    combined = fl.combine(params, frozen)
    model.load_state_dict(combined)
    assert all(torch.equal(t, dict(model.named_parameters())[n]) for n, t in params.items())


def test_combine_merges_the_two_halves_into_a_full_state():
    model = small_cnn()
    trainable, frozen = fl.partition(model, fl.Plan().freeze("0.*"))
    combined = fl.combine(trainable, frozen)
    assert set(combined) == set(model.state_dict())
    assert all(combined[n] is t for n, t in trainable.items())


def test_combine_rejects_a_name_in_both_halves():
    weight = torch.ones(2)
    with pytest.raises(fl.PlanError, match=r"1 names are both trainable and frozen .*'w'"):
        fl.combine({"w": weight}, {"w": weight})


def test_functional_call_rejects_a_name_the_model_lacks():
    model = small_cnn()
    trainable, frozen = fl.partition(model)
    trainable["4.wieght"] = trainable.pop("4.weight")
    with pytest.raises(fl.PlanError, match=r"'4.wieght' names no parameter .*closest: \['4.weight'"):
        fl.functional_call(model, trainable, frozen, images())
