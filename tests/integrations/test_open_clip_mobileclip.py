"""OpenCLIP timm towers with BatchNorm (MobileCLIP-S1): lock and BatchNorm parity with OpenCLIP."""

from __future__ import annotations

import copy

import pytest
import torch
from zoo_helpers import assert_lock_parity, assert_tower_parity, fixed_batchnorms, frozen_params

import frostline as fl

open_clip = pytest.importorskip("open_clip")

TEXT = dict(layers=2, width=32, heads=2, context_length=8, vocab_size=64)


def _mobileclip(custom_text: bool) -> torch.nn.Module:
    # MobileCLIP-S1's image tower: a TimmModel around timm's fastvit_mci1 (BatchNormAct2d inside),
    # on the meta device: real OpenCLIP and timm classes, no storage, cheap copies.
    cfg = {**open_clip.get_model_config("MobileCLIP-S1")["vision_cfg"], "image_size": 64}
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    with torch.device("meta"):
        return cls(16, cfg, TEXT)


@pytest.fixture(scope="module")
def mobileclip_tower():
    return _mobileclip(custom_text=True).visual


@pytest.mark.slow
@pytest.mark.parametrize("freeze_bn_stats", [False, True])
def test_mobileclip_timm_tower_lock_matches_open_clip_below_the_top(mobileclip_tower,
                                                                    freeze_bn_stats):
    n = len(fl.groups(mobileclip_tower))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in mobileclip_tower.modules())
    assert_tower_parity(mobileclip_tower, range(n), freeze_bn_stats)


def test_unlocking_every_group_fixes_no_batchnorm_where_open_clip_fixes_all(mobileclip_tower):
    n = len(fl.groups(mobileclip_tower))
    theirs, ours = copy.deepcopy(mobileclip_tower), copy.deepcopy(mobileclip_tower)
    with torch.device("meta"):
        theirs.lock(unlocked_groups=n, freeze_bn_stats=True)
    fl.lock(ours, unlocked_groups=n, freeze_bn_stats=True)
    assert frozen_params(ours) == set()
    assert fixed_batchnorms(ours) == set()
    every_bn = {p for p, m in mobileclip_tower.named_modules()
                if isinstance(m, torch.nn.BatchNorm2d)}
    assert fixed_batchnorms(theirs) == every_bn  # OpenCLIP 3.3.0's bug, not copied


def test_image_tower_of_whole_clip_locks_timm_batchnorms_like_open_clip():
    clip = _mobileclip(custom_text=False)
    assert_lock_parity(clip, (0, 3, 20, 41), True,
                       lambda m, k, b: m.lock_image_tower(k, b), tower="image")


def test_frozen_batchnorm_keeps_timms_fused_activation():
    import timm
    from open_clip.utils import freeze_batch_norm_2d
    from timm.layers import BatchNormAct2d

    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.train()(x)  # move the running statistics away from their initial values
        expected = model.eval()(x)
    theirs = freeze_batch_norm_2d(copy.deepcopy(model))
    fl.lock(model, 0, freeze_bn_stats=True)
    assert any(isinstance(m, BatchNormAct2d) and not isinstance(m.act, torch.nn.Identity)
               for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model.train()(x), expected)
        assert not torch.allclose(theirs.eval()(x), expected)  # its FrozenBatchNorm2d drops act
