"""The PyTorch backend on CUDA tensors: lock, BatchNorm, guard, checkpoints, torch.func.

These run only where a CUDA device is present (skipped elsewhere).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

import frostline as fl  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=5).cuda()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lock_on_cuda_keeps_frozen_tensors_and_bn_stats_bit_identical():
    model = _resnet()
    fl.lock(model, unlocked_groups=2, freeze_bn_stats=True)
    before = _state(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW(fl.trainable_parameters(model), lr=1e-2, weight_decay=0.1)
    x = torch.randn(4, 3, 64, 64, device="cuda")
    y = torch.randint(0, 5, (4,), device="cuda")
    with fl.guard(model, buffers=True, require_trainable_moved=True):
        for _ in range(3):
            model.train()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = model.state_dict()
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert after["fc.weight"].is_cuda


def test_guard_on_cuda_catches_parameters_frozen_after_the_optimizer_was_built():
    model = _resnet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    model(x).sum().backward()
    opt.step()
    fl.lock(model, unlocked_groups=1)
    with pytest.raises(fl.GuardError, match="frozen parameters moved"):
        with fl.guard(model):
            for _ in range(2):
                opt.zero_grad(set_to_none=False)
                model(x).sum().backward()
                opt.step()


def test_snapshot_fingerprints_live_on_the_cuda_device():
    model = _resnet()
    fl.lock(model, unlocked_groups=1)
    snap = fl.snapshot(model)
    assert [device.type for device in snap.prints] == ["cuda"]
    assert snap.nbytes == 16 * len(list(model.parameters()))


def test_the_accelerator_hash_on_cuda_equals_its_evaluation_on_the_cpu():
    from frostline.torch._fingerprint import _CHUNK, device_fingerprints

    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(2 * _CHUNK + 3, generator=generator),
               torch.randint(-9, 9, (7,), generator=generator),
               torch.randn(33, generator=generator).bfloat16(),
               torch.randn(5, dtype=torch.float64, generator=generator)]
    on_cuda = device_fingerprints([t.cuda() for t in tensors])
    assert on_cuda.is_cuda
    assert torch.equal(on_cuda.cpu(), device_fingerprints(tensors))


def test_guard_on_cuda_catches_changes_in_the_former_null_space():
    layer = torch.nn.Linear(1024, 8192).cuda().requires_grad_(False)
    snap = fl.snapshot(layer)
    with torch.no_grad():
        bits = layer.weight.view(-1).view(torch.int32)
        bits[5000:5003] += torch.tensor([1, -2, 1], dtype=torch.int32, device="cuda")
    with pytest.raises(fl.GuardError, match="1 frozen parameters moved: 'weight'"):
        snap.check()
    snap = fl.snapshot(layer)
    with torch.no_grad():
        flat = layer.weight.view(-1)
        flat[[7, (1 << 22) + 7]] = flat[[(1 << 22) + 7, 7]].clone()
    assert snap.moved() == {"weight"}


def test_trainable_checkpoint_from_cuda_restores_identical_outputs(tmp_path):
    model = _resnet()
    fl.lock(model, unlocked_groups=2)
    opt = torch.optim.AdamW(fl.trainable_parameters(model), lr=1e-2)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    for _ in range(2):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    fl.save_trainable(model, tmp_path / "top.safetensors")
    fresh = _resnet()
    fl.load_trainable(fresh, tmp_path / "top.safetensors")
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


def test_functional_grad_on_cuda_touches_only_trainable_tensors():
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(4)]).cuda()
    plan = fl.Plan.lock(1)
    trainable, frozen = fl.partition(net, plan)
    x = torch.randn(3, 8, device="cuda")

    def loss(params):
        return fl.functional_call(net, params, frozen, (x,)).square().mean()

    grads = torch.func.grad(loss)(trainable)
    assert set(grads) == set(trainable) == {"3.weight", "3.bias"}
    assert all(g.is_cuda and g.abs().sum() > 0 for g in grads.values())
