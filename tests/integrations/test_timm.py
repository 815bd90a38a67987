"""timm: fl.groups is timm's own group_parameters(model, model.group_matcher(coarse)), exactly."""

from __future__ import annotations

import functools

import pytest
import torch

import frostline as fl

timm = pytest.importorskip("timm")

# Small variants of many families; created on the meta device (real timm classes, no storage),
# since grouping looks at names and module classes only.
ARCHITECTURES = [
    "resnet10t", "resnet18", "convnext_atto", "efficientnet_b0", "tinynet_e",
    "mobilenetv3_small_050", "mobilenetv2_050", "regnetx_002", "vit_tiny_patch16_224",
    "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "levit_128s", "coat_lite_tiny",
    "edgenext_xx_small", "ghostnet_050", "mixer_s32_224", "rexnet_100", "hrnet_w18_small",
    "densenet121", "dla34", "dpn68", "cspresnet50", "nf_resnet26", "res2net50_14w_8s", "vgg11",
    "xcit_nano_12_p16_224", "efficientvit_b0", "mobilevit_xxs", "repvgg_a0", "fastvit_t8",
    "cait_xxs24_224", "pvt_v2_b0", "mobileone_s0", "resnest14d", "maxvit_nano_rw_256",
    "eva02_tiny_patch14_224", "crossvit_tiny_240", "twins_svt_small", "convit_tiny",
    "davit_tiny", "hgnetv2_b0", "inception_v3",
]


@functools.lru_cache(maxsize=None)
def _model(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=10)


def _timm_groups(model: torch.nn.Module, coarse: bool) -> list[set[str]]:
    from timm.models import group_parameters

    grouping = group_parameters(model, model.group_matcher(coarse=coarse))
    return [set(names) for _, names in sorted(grouping.items())]


@pytest.mark.parametrize("coarse", [False, True])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_groups_equal_timm_group_parameters(name, coarse):
    model = _model(name)
    found = fl.groups(model, coarse=coarse)
    # Each tensor once, under its named_parameters() name, as timm sees it; aliases of shared
    # modules (CoaT shares cpe/crpe with its blocks) are listed apart, in Group.aliases.
    ours = [set(group.parameter_names) for group in found]
    assert ours == _timm_groups(model, coarse)
    assert found.source == "timm group_matcher"
    named = dict(model.named_parameters())
    assert all(name in named for group in found for name in group.parameter_names)


def test_architectures_cover_at_least_25_families():
    assert len({_model(n).__class__.__name__ for n in ARCHITECTURES}) >= 25


def test_shared_modules_land_with_their_canonical_name():
    found = fl.groups(_model("coat_lite_tiny"))
    assert "cpe1.proj.weight" in found[0].parameter_names
    assert "serial_blocks1.0.cpe.proj.weight" in found[0].aliases
    assert "serial_blocks1.0.cpe.proj.weight" not in found[0].parameter_names


def test_parameters_no_matcher_rule_names_are_reported_in_the_last_group():
    found = fl.groups(_model("vit_tiny_patch16_224"))
    assert set(found.unmatched) == {"head.weight", "head.bias"}
    assert set(found.unmatched) <= set(found[-1].parameter_names)
    assert any("match no group_matcher rule" in note for note in found.notes)


@pytest.mark.parametrize("name", ["poolformer_s12", "pit_ti_224"])
def test_models_without_group_matcher_get_automatic_groups(name):
    model = _model(name)
    assert not hasattr(model, "group_matcher")
    found = fl.groups(model)
    assert found.source == "auto"
    assert found.names[0] == "stem" and found.names[-1] == "head" and len(found) >= 4
    placed = {n for group in found for n in group.leaf_names}
    assert placed == {leaf.name for leaf in fl.view(model)}


def test_lock_trains_only_the_top_groups_and_keeps_frozen_batchnorm_stats():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    fl.lock(model, 2, freeze_bn_stats=True)
    found = fl.groups(model)
    top = set(found[-1].parameter_names) | set(found[-2].parameter_names)
    before = {n: t.detach().clone() for n, t in [*model.named_parameters(),
                                                 *model.named_buffers()]}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    for name, p in model.named_parameters():
        if name in top:
            assert p.grad is not None, name
        else:
            assert p.grad is None and torch.equal(p, before[name]), name
    assert not torch.equal(model.get_classifier().weight, before["fc.weight"])
    stats = {n for n in before if n.endswith("running_mean")}
    frozen_stats = {n for n in stats if n.rsplit(".", 1)[0] + ".weight" not in top}
    assert frozen_stats and all(torch.equal(dict(model.named_buffers())[n], before[n])
                                for n in frozen_stats)
    assert all(not torch.equal(dict(model.named_buffers())[n], before[n])
               for n in stats - frozen_stats)
