"""fl.guard / fl.snapshot: frozen tensors and frozen BatchNorm statistics provably did not move."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_resnet, tiny_vit
from torch import nn

import frostline as fl
from frostline.torch._guard import device_fingerprints, fingerprint


def device_fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    return device_fingerprints([tensor])[0]


FINGERPRINTS = pytest.mark.parametrize("print_fn", [fingerprint, device_fingerprint],
                                       ids=["cpu-crc", "integer-sums"])




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


def test_train_mode_updating_frozen_batchnorm_statistics_is_caught_with_buffers():
    model = tiny_resnet()
    fl.lock(model, unlocked_groups=1)
    model.train()
    snap = fl.snapshot(model, buffers=True)
    with torch.no_grad():
        model(images())
    moved = snap.moved()
    assert "bn1.running_mean" in moved and "layer4.0.bn2.running_var" in moved
    with pytest.raises(fl.GuardError, match=r"BatchNorm statistics .*'bn1.running_mean'"):
        snap.check()
    fl.snapshot(model).check()


def test_frozen_batchnorm_statistics_pass_the_buffer_guard_after_train():
    model = tiny_resnet()
    fl.lock(model, unlocked_groups=1, freeze_bn_stats=True)
    model.train()
    optimizer = torch.optim.SGD(fl.param_groups(model, lr=0.1), momentum=0.9)
    with fl.guard(model, buffers=True, require_trainable_moved=True):
        train_step(model, optimizer)


def test_buffer_guard_ignores_statistics_of_trainable_batchnorms():
    model = tiny_resnet()
    model.train()
    before = model.bn1.running_mean.clone()
    snap = fl.snapshot(model, buffers=True)
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


@FINGERPRINTS
def test_one_ulp_change_in_a_large_tensor_changes_the_fingerprint(print_fn):
    tensor = torch.randn(3 * (1 << 20) + 7, generator=torch.Generator().manual_seed(0))
    changed = tensor.clone()
    changed[-2] = torch.nextafter(changed[-2], torch.tensor(float("inf")))
    assert torch.equal(print_fn(tensor), print_fn(tensor.clone()))
    assert not torch.equal(print_fn(tensor), print_fn(changed))


@FINGERPRINTS
def test_swapped_elements_are_caught(print_fn):
    tensor = torch.randn(64)
    swapped = tensor.clone()
    swapped[[3, 40]] = tensor[[40, 3]]
    assert not torch.equal(print_fn(tensor), print_fn(swapped))


@FINGERPRINTS
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.int64,
                                   torch.int8, torch.bool, torch.complex64])
def test_fingerprint_sees_any_change_of_any_dtype(print_fn, dtype):
    tensor = (torch.arange(12) % 2).to(dtype)
    changed = tensor.clone()
    changed[5] = 0 if dtype is not torch.bool else False
    assert torch.equal(print_fn(tensor), print_fn(tensor.clone()))
    assert not torch.equal(print_fn(tensor), print_fn(changed))


def test_fingerprint_of_a_non_contiguous_tensor_follows_its_values():
    tensor = torch.randn(8, 6)
    assert torch.equal(fingerprint(tensor.t()), fingerprint(tensor.t().contiguous()))


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


def test_integer_sums_equal_their_definition_whatever_the_packing():
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(5, generator=generator), torch.randn((1 << 22) + 3, generator=generator),
               torch.randint(-9, 9, (7,), generator=generator), torch.randn(0)]
    together = device_fingerprints(tensors)
    for tensor, row in zip(tensors, together):
        assert torch.equal(row, device_fingerprint(tensor))
    for tensor, row in zip([tensors[0], tensors[2]], [together[0], together[2]]):
        bits = tensor.reshape(-1).view(torch.int32 if tensor.is_floating_point() else torch.int64)
        bits = bits.to(torch.int64)
        weights = torch.arange(1, bits.numel() + 1)
        assert row.tolist() == [int(bits.sum()), int((bits * weights).sum())]
