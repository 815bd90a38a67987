"""Frozen BatchNorm statistics: every BatchNorm flavour, train() calls, state dicts, re-locking."""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
from timm.layers import BatchNormAct2d
from torch import nn

import frostline as fl


class ConvNet(nn.Module):
    """stem, three same-type blocks, head: one BatchNorm of the given flavour in each part."""

    def __init__(self, norm=nn.BatchNorm2d, dims: int = 2):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.stem = nn.Sequential(conv(3, 4, 3, padding=1), norm(4))
        self.blocks = nn.ModuleList(nn.Sequential(conv(4, 4, 3, padding=1), norm(4))
                                    for _ in range(3))
        self.head = nn.Linear(4, 2)
        self.dims = dims

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(2).mean(-1))


def batch(dims: int = 2, n: int = 4):
    return torch.randn(n, 3, *([6] * dims)) * 3 + 1


def bn_state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same(before, after):
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


FLAVOURS = {
    "bn1d": (nn.BatchNorm1d, 1),
    "bn2d": (nn.BatchNorm2d, 2),
    "bn3d": (nn.BatchNorm3d, 3),
    "sync_bn": (nn.SyncBatchNorm, 2),
    "bn_act": (BatchNormAct2d, 2),
}


def frozen_and_trained(model):
    """Lock everything but the head with frozen stats, then run training-mode forwards."""
    fl.lock(model, unlocked_groups=1, freeze_bn_stats=True)
    model.train()
    return [model.stem[1], *(block[1] for block in model.blocks)]


@pytest.mark.parametrize("norm, dims", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_frozen_stats_stay_fixed_in_training_mode(norm, dims):
    model = ConvNet(norm, dims)
    norms = frozen_and_trained(model)
    before = [bn_state(n) for n in norms]
    for _ in range(3):
        model.train()
        model(batch(dims))
    for bn, state in zip(norms, before):
        assert not bn.training
        assert not bn.weight.requires_grad and not bn.bias.requires_grad
        assert_same(state, bn_state(bn))


def test_frozen_stats_stay_fixed_when_code_sets_training_directly():
    """Code that bypasses train() (``module.training = True``) meets the forward pre-hook."""
    model = ConvNet()
    norms = frozen_and_trained(model)
    before = [bn_state(n) for n in norms]
    for module in model.modules():
        module.training = True
    with fl.guard(model):
        model(batch())
    for bn, state in zip(norms, before):
        assert not bn.training
        assert_same(state, bn_state(bn))


def test_trainable_batchnorm_keeps_updating_its_statistics():
    model = ConvNet()
    fl.lock(model, unlocked_groups=2, freeze_bn_stats=True)
    model.train()
    last = model.blocks[2][1]
    before = last.running_mean.clone()
    model(batch())
    assert last.training
    assert not torch.equal(before, last.running_mean)
    assert int(last.num_batches_tracked) == 1


def test_frozen_stats_survive_repeated_train_and_eval_calls():
    model = ConvNet()
    norms = frozen_and_trained(model)
    for mode in (True, False, True, True):
        model.train(mode)
        assert [bn.training for bn in norms] == [False] * 4
        assert model.head.training == mode


def test_frozen_batchnorm_normalises_with_its_running_statistics():
    model = ConvNet()
    model.train()
    for _ in range(3):
        model(batch())  # give the running statistics non-trivial values
    reference = copy.deepcopy(model).eval()
    frozen_and_trained(model)
    x = batch()
    torch.testing.assert_close(model.stem(x), reference.stem(x), rtol=0, atol=0)


def test_batchnorm_act_keeps_its_activation():
    model = ConvNet(lambda c: BatchNormAct2d(c, act_layer=nn.ReLU))
    bn = frozen_and_trained(model)[0]
    assert isinstance(bn, BatchNormAct2d) and isinstance(bn.act, nn.ReLU)
    out = model.stem(batch())
    assert out.min() >= 0 and (out == 0).any()


def test_sync_batchnorm_runs_on_cpu_once_frozen():
    model = ConvNet(nn.SyncBatchNorm)
    frozen_and_trained(model)
    assert model(batch()).shape == (4, 2)


def test_timm_resnet_freezes_stats_of_frozen_groups_only():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    fl.lock(model, unlocked_groups=2, freeze_bn_stats=True)
    model.train()
    unlocked = {n for g in fl.groups(model).groups[-2:] for n in g.parameter_names}
    for path, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            in_unlocked = f"{path}.weight" in unlocked
            assert module.training == in_unlocked, path
    assert fl.summary(model).rows[0].frozen_bn > 0


def test_state_dict_saved_before_freezing_loads_after_and_back():
    model = ConvNet()
    model.train()
    model(batch())
    saved_before = bn_state(model)
    frozen_and_trained(model)
    model.load_state_dict(saved_before, strict=True)
    assert_same(saved_before, bn_state(model))
    saved_after = bn_state(model)
    plain = ConvNet()
    plain.load_state_dict(saved_after, strict=True)
    assert_same(saved_after, bn_state(plain))


def test_relocking_releases_stats_of_groups_that_thaw():
    model = ConvNet()
    norms = frozen_and_trained(model)
    fl.lock(model, unlocked_groups=3, freeze_bn_stats=True)
    model.train()
    assert [bn.training for bn in norms] == [False, False, True, True]
    assert all("train" not in bn.__dict__ for bn in norms[2:])
    fl.lock(model, unlocked_groups=0, freeze_bn_stats=False)
    model.train()
    assert [bn.training for bn in norms] == [True] * 4
    before = norms[0].running_mean.clone()
    model(batch())
    assert not torch.equal(before, norms[0].running_mean)


def test_lock_without_freeze_bn_stats_leaves_statistics_updating():
    model = ConvNet()
    fl.lock(model, unlocked_groups=1, freeze_bn_stats=False)
    model.train()
    before = model.stem[1].running_var.clone()
    model(batch())
    assert model.stem[1].training
    assert not torch.equal(before, model.stem[1].running_var)


def test_frozen_stats_survive_a_deep_copy():
    model = ConvNet()
    frozen_and_trained(model)
    clone = copy.deepcopy(model)
    clone.train()
    before = bn_state(clone.stem[1])
    clone(batch())
    assert not clone.stem[1].training
    assert_same(before, bn_state(clone.stem[1]))
    assert model.stem[1] is not clone.stem[1]


def test_frozen_stats_survive_pickling():
    model = ConvNet()
    frozen_and_trained(model)
    clone = pickle.loads(pickle.dumps(model))
    clone.train()
    assert not clone.stem[1].training
    before = bn_state(clone.stem[1])
    clone(batch())
    assert_same(before, bn_state(clone.stem[1]))
    assert fl.summary(clone).rows[0].frozen_bn == 1
