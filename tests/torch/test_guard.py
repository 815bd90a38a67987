"""fl.guard / fl.snapshot: frozen tensors and frozen BatchNorm statistics provably did not move."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_resnet, tiny_vit
from torch import nn

import frostline as fl


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, *,
               set_to_none: bool = True) -> None:
    optimizer.zero_grad(set_to_none=set_to_none)
    model(images()).square().mean().backward()
    optimizer.step()


def frozen_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def test_guard_passes_when_optimizer_holds_only_trainable_parameters():
    model = tiny_vit()
    fl.lock(model, unlocked_groups=2)
    optimizer = torch.optim.AdamW(fl.param_groups(model, lr=1e-2, weight_decay=0.1))
    with fl.guard(model, require_trainable_moved=True):
        train_step(model, optimizer, set_to_none=False)
        train_step(model, optimizer, set_to_none=False)


def test_adamw_weight_decay_moves_parameters_frozen_after_the_optimizer_was_built():
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    train_step(model, optimizer)
    fl.lock(model, unlocked_groups=1)
    snap = fl.snapshot(model)
    train_step(model, optimizer, set_to_none=False)
    assert snap.moved() >= frozen_names(model)
    with pytest.raises(fl.GuardError, match=r"frozen parameters moved: 'cls_token'.*zeros"):
        snap.check()


def test_sgd_momentum_moves_parameters_frozen_after_the_optimizer_was_built():
    model = tiny_vit()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    train_step(model, optimizer)
    fl.lock(model, unlocked_groups=1)
    with pytest.raises(fl.GuardError, match=rf"{len(frozen_names(model))} frozen parameters"):
        with fl.guard(model):
            train_step(model, optimizer, set_to_none=False)


def test_train_mode_updating_frozen_batchnorm_statistics_is_caught_by_default():
    model = tiny_resnet()
    fl.lock(model, unlocked_groups=1)
    model.train()
    snap, parameters_only = fl.snapshot(model), fl.snapshot(model, buffers=False)
    with torch.no_grad():
        model(images())
    moved = snap.moved()
    assert "bn1.running_mean" in moved and "layer4.0.bn2.running_var" in moved
    with pytest.raises(fl.GuardError, match=r"BatchNorm statistics .*'bn1.running_mean'"):
        snap.check()
    parameters_only.check()


def test_frozen_batchnorm_statistics_pass_the_buffer_guard_after_train():
    model = tiny_resnet()
    fl.lock(model, unlocked_groups=1, freeze_bn_stats=True)
    model.train()
    optimizer = torch.optim.SGD(fl.param_groups(model, lr=0.1), momentum=0.9)
    with fl.guard(model, require_trainable_moved=True):
        train_step(model, optimizer)


def test_buffer_guard_ignores_statistics_of_trainable_batchnorms():
    model = tiny_resnet()
    model.train()
    before = model.bn1.running_mean.clone()
    snap = fl.snapshot(model)
    with torch.no_grad():
        model(images())
    snap.check()
    assert not torch.equal(before, model.bn1.running_mean)
    assert not any("running" in name for name in snap.frozen)


@pytest.mark.parametrize("value", [0.37, -1e-30, 3e38])
def test_single_element_change_of_one_ulp_is_caught(value):
    layer = nn.Linear(1500, 3000)
    with torch.no_grad():
        layer.weight[2999, 1499] = value
    layer.weight.requires_grad_(False)
    assert layer.weight.numel() > 4 * (1 << 20)
    snap = fl.snapshot(layer)
    with torch.no_grad():
        layer.weight[2999, 1499] = torch.nextafter(layer.weight[2999, 1499], torch.tensor(0.0))
    assert snap.moved() == {"weight"}
    with pytest.raises(fl.GuardError, match=r"1 frozen parameters moved: 'weight'"):
        snap.check()


def test_require_trainable_moved_names_a_parameter_that_got_no_update():
    model = nn.ModuleDict({"used": nn.Linear(2, 2), "unused": nn.Linear(2, 2)})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(fl.GuardError, match=r"2 trainable parameters did not move: "
                                            r"'unused.weight', 'unused.bias'"):
        with fl.guard(model, require_trainable_moved=True):
            model["used"](torch.ones(1, 2)).sum().backward()
            optimizer.step()


def test_plan_decides_what_is_frozen_instead_of_requires_grad():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    snap = fl.snapshot(model, fl.Plan().freeze("0.*"))
    assert set(snap.frozen) == {"0.weight", "0.bias"}
    with torch.no_grad():
        model[1].weight.add_(1.0)
    snap.check()
    with torch.no_grad():
        model[0].bias.add_(1.0)
    with pytest.raises(fl.GuardError, match="'0.bias'"):
        snap.check()


def test_snapshot_memory_does_not_grow_with_parameter_count():
    small, big = nn.Linear(4, 4), nn.Linear(512, 512)
    for model in (small, big):
        model.requires_grad_(False)
    assert fl.snapshot(small).nbytes == fl.snapshot(big).nbytes == 2 * 16


def test_check_against_a_model_missing_snapshotted_tensors_raises():
    snap = fl.snapshot(nn.Sequential(nn.Linear(2, 2)).requires_grad_(False))
    with pytest.raises(fl.GuardError, match=r"lacks 2 tensors of the snapshot \(first: '0.weight'"):
        snap.check(nn.Linear(2, 2))


def test_snapshot_of_a_bare_tensor_is_refused():
    with pytest.raises(fl.BackendError, match="expected a torch.nn.Module, got a Tensor"):
        fl.snapshot(torch.ones(2))


def test_fixed_statistics_of_a_batchnorm_with_trainable_parameters_are_watched():
    model = tiny_resnet()
    fl.apply(model, fl.Plan().freeze("**").with_bn(freeze_bn_stats=True, train_bn=True))
    assert model.bn1.weight.requires_grad
    snap = fl.snapshot(model)
    assert "bn1.running_mean" in snap.frozen
    with torch.no_grad():
        model.bn1.running_mean.add_(1.0)
    with pytest.raises(fl.GuardError, match=r"1 BatchNorm statistics .*'bn1.running_mean'"):
        snap.check()


def test_guard_refuses_an_optimizer_that_holds_frozen_parameters():
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    fl.lock(model, unlocked_groups=1)
    count = len(frozen_names(model))
    with pytest.raises(fl.GuardError, match=rf"^{count} frozen parameters are in the optimizer: "
                                            r"'cls_token', 'pos_embed'.*fl.param_groups"):
        with fl.guard(model, optimizer=optimizer):
            pytest.fail("the block must not run")


def test_guard_refuses_an_optimizer_missing_parameters_thawed_after_it_was_built():
    model = tiny_vit()
    fl.lock(model, unlocked_groups=1)
    optimizer = torch.optim.AdamW(fl.param_groups(model, lr=1e-2))
    fl.lock(model, unlocked_groups=2)
    with pytest.raises(fl.GuardError, match=r"trainable parameters are in no param group of the "
                                            r"optimizer: 'blocks.2.norm1.weight'"):
        fl.snapshot(model, optimizer=optimizer)


def test_optimizer_check_passes_for_an_optimizer_built_after_freezing():
    model = tiny_vit()
    fl.lock(model, unlocked_groups=2)
    optimizer = torch.optim.AdamW(fl.param_groups(model, lr=1e-2, weight_decay=0.1))
    with fl.guard(model, optimizer=optimizer, require_trainable_moved=True):
        train_step(model, optimizer, set_to_none=False)


def test_optimizer_and_requires_grad_are_checked_again_after_the_block():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
    with pytest.raises(fl.GuardError) as info:
        with fl.guard(model, optimizer=optimizer):
            model[0].weight.requires_grad_(True)
            optimizer.add_param_group({"params": [model[0].bias]})
    message = str(info.value)
    assert "1 parameters changed requires_grad since the snapshot: '0.weight' (frozen -> " \
           "trainable)" in message
    assert "1 frozen parameters are in the optimizer: '0.bias'" in message


def test_guard_rejects_an_object_without_param_groups_as_optimizer():
    with pytest.raises(fl.GuardError, match="expects a torch.optim.Optimizer .* got a list"):
        fl.snapshot(nn.Linear(2, 2), optimizer=[nn.Linear(2, 2).weight])


def test_requires_grad_drift_is_reported_even_when_nothing_moved():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    snap = fl.snapshot(model)
    model[1].bias.requires_grad_(False)
    with pytest.raises(fl.GuardError, match=r"'1.bias' \(trainable -> frozen\)"):
        snap.check()


def test_a_dtype_cast_of_frozen_parameters_is_named_as_a_cast():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    snap = fl.snapshot(model)
    model.to(torch.float64)
    with pytest.raises(fl.GuardError, match=r"2 frozen tensors changed dtype or shape since the "
                                            r"snapshot: '0.weight' \(float32 -> float64\)") as info:
        snap.check()
    assert "zeros" not in str(info.value)


def test_rounding_through_bfloat16_is_named_as_precision_loss():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 2))
    model[0].requires_grad_(False)
    snap = fl.snapshot(model)
    model.bfloat16().float()
    with pytest.raises(fl.GuardError, match=r"2 frozen parameters moved, and every value now fits "
                                            r"bfloat16: '0.weight' \(bfloat16\)") as info:
        snap.check()
    assert "zeros" not in str(info.value)


def test_bfloat16_updates_swallowed_by_rounding_are_named_as_precision_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)).bfloat16()
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD(model[1].parameters(), lr=1e-7)
    with pytest.raises(fl.GuardError, match=r"2 trainable bfloat16 parameters did not move "
                                            r"although their gradient is not zero: '1.weight', "
                                            r"'1.bias'. Precision loss"):
        with fl.guard(model, optimizer=optimizer, require_trainable_moved=True):
            model(torch.randn(4, 8, dtype=torch.bfloat16)).square().sum().backward()
            optimizer.step()
    assert model[1].weight.grad.count_nonzero() > 0


def test_round_values_that_fit_bfloat16_are_not_taken_for_rounding():
    layer = nn.Linear(16, 16).requires_grad_(False)
    with torch.no_grad():
        layer.weight.zero_()
    snap = fl.snapshot(layer)
    with torch.no_grad():
        layer.weight[3, 4] = 1.0
    with pytest.raises(fl.GuardError, match=r"^1 frozen parameters moved: 'weight'\. A frozen "
                                            r"parameter moves when it still gets a gradient"):
        snap.check()
