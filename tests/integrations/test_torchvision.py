"""torchvision: family groups laid out as timm lays out the same architectures."""

from __future__ import annotations

import pytest
import torch

import frostline as fl

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

# torchvision model -> (timm equivalent, timm coarse), compared group by group by size.
TIMM_TWINS = {
    "resnet18": ("resnet18", True),
    "convnext_tiny": ("convnext_tiny", True),
    "swin_t": ("swin_tiny_patch4_window7_224", True),
    "vit_b_16": ("vit_base_patch16_224", False),
    "efficientnet_b0": ("efficientnet_b0", True),
}


def _meta(factory, *args, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return factory(*args, **kwargs)


def _sizes(model: torch.nn.Module, **options) -> list[int]:
    view = fl.view(model)
    return [sum(view[n].numel for n in g.parameter_names) for g in fl.groups(model, **options)]


@pytest.mark.parametrize("name", sorted(TIMM_TWINS))
def test_groups_match_timms_groups_of_the_same_architecture(name):
    twin, coarse = TIMM_TWINS[name]
    ours = _meta(getattr(torchvision.models, name), weights=None)
    theirs = _meta(timm.create_model, twin, pretrained=False)
    assert fl.groups(ours).source == "torchvision rule"
    assert _sizes(ours) == _sizes(theirs, coarse=coarse)


@pytest.mark.parametrize("name", ["resnet18", "convnext_tiny", "efficientnet_b0",
                                  "mobilenet_v3_small", "vit_b_16", "swin_t"])
def test_every_parameter_is_in_exactly_one_group_stem_first_head_last(name):
    model = _meta(getattr(torchvision.models, name), weights=None)
    found = fl.groups(model)
    placed = [n for group in found for n in group.leaf_names]
    assert sorted(placed) == sorted(leaf.name for leaf in fl.view(model))
    assert found.names[0] == "stem" and found.names[-1] == "head" and not found.unmatched


def test_convnext_stage_groups_open_with_their_downsampling_layer():
    found = fl.groups(_meta(torchvision.models.convnext_tiny, weights=None))
    assert found["stage2"].modules == ("features.2", "features.3")


def test_lock_trains_only_the_head_of_a_resnet():
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    fl.lock(model, 1, freeze_bn_stats=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    running = model.layer4[1].bn2.running_mean.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (not name.startswith("fc.")), name
    assert torch.equal(model.layer4[1].bn2.running_mean, running)
