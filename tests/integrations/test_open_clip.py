"""OpenCLIP: fl.lock freezes exactly what OpenCLIP's own lock freezes, and goes where it refuses."""

from __future__ import annotations

import copy

import pytest
import torch
from zoo_helpers import assert_lock_parity, assert_tower_parity, fixed_batchnorms, frozen_params

import frostline as fl

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

VIT = dict(layers=3, width=32, patch_size=8, image_size=32, head_width=16)
TEXT = dict(layers=3, width=32, heads=2, context_length=8, vocab_size=64)


def _clip(vision_cfg: dict, custom_text: bool = False) -> torch.nn.Module:
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    return cls(16, vision_cfg, TEXT)


@pytest.fixture(scope="module")
def vit_clip():
    return _clip(VIT)


# Parity is about which tensors freeze, so the big timm towers live on the meta device: real
# OpenCLIP and timm classes, no storage, cheap copies.
@pytest.fixture(scope="module")
def convnext_tower():
    with torch.device("meta"):
        return _clip(dict(timm_model_name="convnext_tiny", timm_proj="linear", image_size=32)).visual


def test_vit_tower_lock_matches_open_clip_for_every_k(vit_clip):
    n = len(fl.groups(vit_clip.visual))
    assert n == VIT["layers"] + 2
    assert_tower_parity(vit_clip.visual, range(n + 1), freeze_bn_stats=False)


def test_vit_groups_are_open_clips_groups(vit_clip):
    found = fl.groups(vit_clip.visual)
    assert found[0].parameter_names == (
        "class_embedding", "positional_embedding", "conv1.weight", "ln_pre.weight", "ln_pre.bias")
    assert set(found[-2].parameter_names) >= {"ln_post.weight", "ln_post.bias"}
    assert found[-1].parameter_names == ("proj",)


@pytest.mark.parametrize("freeze_bn_stats", [False, True])
def test_convnext_timm_tower_lock_matches_open_clip_for_every_k(convnext_tower, freeze_bn_stats):
    n = len(fl.groups(convnext_tower))
    assert_tower_parity(convnext_tower, range(n + 1), freeze_bn_stats)


def test_timm_tower_keeps_head_trainable_at_zero_as_open_clip_does(convnext_tower):
    tower = copy.deepcopy(convnext_tower)
    fl.lock(tower, 0)
    head = {n for n, _ in tower.named_parameters() if n.startswith("head.")}
    assert head and not head & frozen_params(tower)
    assert frozen_params(tower) == {n for n, _ in tower.named_parameters() if n.startswith("trunk.")}


def test_timm_tower_head_group_option_makes_head_the_top_group(convnext_tower):
    tower = copy.deepcopy(convnext_tower)
    plain, with_head = fl.groups(tower), fl.groups(tower, head_group=True)
    assert len(with_head) == len(plain) + 1
    assert with_head[-1].parameter_names == ("head.proj.weight",)
    fl.lock(tower, 0, grouping=fl.Grouping(head_group=True))
    assert frozen_params(tower) == {n for n, _ in tower.named_parameters()}
    fl.lock(tower, 1, grouping=fl.Grouping(head_group=True))
    assert frozen_params(tower) == {n for n, _ in tower.named_parameters() if n.startswith("trunk.")}


def test_unlocking_more_groups_than_the_tower_has_raises_with_the_count(convnext_tower):
    n = len(fl.groups(convnext_tower))
    with pytest.raises(fl.GroupError, match=f"cannot unlock {n + 1} groups: the model has {n}"):
        fl.lock(copy.deepcopy(convnext_tower), n + 1, freeze_bn_stats=True)


@pytest.mark.parametrize("tower", ["image", "text"])
def test_whole_clip_lock_of_one_tower_matches_open_clip_for_every_k(vit_clip, tower):
    n = len(fl.groups(vit_clip, tower=tower))
    lock = {"image": lambda m, k, b: m.lock_image_tower(k, b),
            "text": lambda m, k, b: m.lock_text_tower(k)}[tower]
    assert_lock_parity(vit_clip, range(n + 1), False, lock, tower=tower)


def test_tower_groups_are_named_from_the_clip_root(vit_clip):
    found = fl.groups(vit_clip, tower="image")
    assert found.scope == ("visual",)
    assert "visual.transformer.resblocks.1" in found.names
    assert all(n.startswith("visual.") for g in found for n in g.leaf_names)


def test_image_tower_lock_leaves_the_text_tower_untouched(vit_clip):
    clip = copy.deepcopy(vit_clip)
    fl.lock(clip, 0, tower="image")
    assert frozen_params(clip) == {n for n, _ in clip.named_parameters() if n.startswith("visual.")}


def test_unknown_tower_is_an_error_with_the_closest_path(vit_clip):
    with pytest.raises(fl.GroupError, match="unknown tower 'visul'.*closest: visual"):
        fl.groups(vit_clip, tower="visul")


def test_modified_resnet_locks_by_groups_where_open_clip_refuses():
    clip = _clip(dict(layers=[1, 1, 1, 1], width=8, image_size=64, head_width=8))
    visual = clip.visual
    with pytest.raises(AssertionError):
        copy.deepcopy(visual).lock(unlocked_groups=1)
    assert fl.groups(visual).names == ["stem", "layer1", "layer2", "layer3", "layer4", "attnpool"]
    fl.lock(visual, 5, freeze_bn_stats=True)
    stem = {"conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
            "conv3.weight", "bn3.weight", "bn3.bias"}
    assert frozen_params(visual) == stem
    assert fixed_batchnorms(visual) == {"bn1", "bn2", "bn3"}


def test_modified_resnet_full_lock_matches_open_clip():
    visual = _clip(dict(layers=[1, 1, 1, 1], width=8, image_size=64, head_width=8)).visual
    theirs, ours = copy.deepcopy(visual), copy.deepcopy(visual)
    theirs.lock(unlocked_groups=0, freeze_bn_stats=True)
    fl.lock(ours, 0, freeze_bn_stats=True)
    assert frozen_params(ours) == frozen_params(theirs)
    assert fixed_batchnorms(ours) == fixed_batchnorms(theirs)


@pytest.fixture(scope="module")
def hf_text_clip():
    from open_clip.hf_model import HFTextEncoder

    config = transformers.RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3,
                                        num_attention_heads=2, intermediate_size=64,
                                        max_position_embeddings=40)
    clip = _clip(VIT, custom_text=True)
    clip.text = HFTextEncoder("roberta-base", 16, config=config, pooler_type="mean_pooler",
                              proj_type="linear", pretrained=False)
    return clip


def test_hf_text_tower_lock_matches_open_clip_for_every_k(hf_text_clip, capsys):
    n = len(fl.groups(hf_text_clip, tower="text"))
    assert n == 4
    assert_lock_parity(hf_text_clip, range(n + 1), False,
                       lambda m, k, b: m.lock_text_tower(k), tower="text")


def test_locked_tower_trains_only_its_unlocked_groups(vit_clip):
    clip = copy.deepcopy(vit_clip)
    fl.lock(clip, 1, tower="image")
    before = {n: p.detach().clone() for n, p in clip.named_parameters()}
    opt = torch.optim.SGD([p for p in clip.parameters() if p.requires_grad], lr=0.1)
    image, text = torch.randn(2, 3, 32, 32), torch.randint(0, 64, (2, 8))
    out = clip(image, text)
    (out[0].sum() + out[1].sum()).backward()
    opt.step()
    for name, p in clip.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        if name.startswith("visual."):
            assert moved == (name == "visual.proj"), name


def test_whole_clip_groups_are_image_then_text_then_the_rest(vit_clip):
    found = fl.groups(vit_clip)
    image, text = fl.groups(vit_clip, tower="image"), fl.groups(vit_clip, tower="text")
    assert found.names == [*image.names, *text.names, "rest"]
    assert found["rest"].parameter_names == ("logit_scale",)
    assert found.scope == ()


def test_tower_lock_plan_round_trips_and_replays_on_the_model(vit_clip):
    clip = copy.deepcopy(vit_clip)
    plan = fl.lock(clip, 2, tower="text")
    assert str(plan) == ("Plan(freeze **, unfreeze group:-2:; unlocked_groups=2, "
                         "groups(tower='text'), scope token_embedding,positional_embedding,"
                         "transformer,ln_final,text_projection)")
    replayed = copy.deepcopy(vit_clip)
    fl.apply(replayed, fl.Plan.from_yaml(plan.to_yaml()))  # the plan carries tower="text"
    assert frozen_params(replayed) == frozen_params(clip)


@pytest.mark.parametrize("k", [0, 2])
def test_image_then_text_tower_locks_compose_as_open_clips(vit_clip, k):
    ours, theirs = copy.deepcopy(vit_clip), copy.deepcopy(vit_clip)
    theirs.lock_image_tower(k)
    theirs.lock_text_tower(k)
    fl.lock(ours, k, tower="image")
    fl.lock(ours, k, tower="text")
    assert frozen_params(ours) == frozen_params(theirs)
    if k == 0:
        assert {n for n, p in ours.named_parameters() if p.requires_grad} == {"logit_scale"}


def test_a_tower_lock_keeps_what_was_frozen_by_hand_outside_its_tower(vit_clip):
    clip = copy.deepcopy(vit_clip)
    clip.logit_scale.requires_grad_(False)
    fl.lock(clip, 1, tower="image")
    assert not clip.logit_scale.requires_grad
    assert clip.transformer.resblocks[0].attn.in_proj_weight.requires_grad


def test_two_tower_locks_as_one_composed_plan_round_trip(vit_clip):
    clip = copy.deepcopy(vit_clip)
    image = fl.lock(clip, 1, tower="image")
    text = fl.lock(clip, 0, tower="text")
    replayed = copy.deepcopy(vit_clip)
    fl.apply(replayed, fl.Plan.from_yaml((image + text).to_yaml()))
    assert frozen_params(replayed) == frozen_params(clip)


def test_a_tower_recommendation_decides_that_tower_only(vit_clip):
    model = copy.deepcopy(vit_clip)
    model.text_projection.requires_grad_(False)  # frozen by hand, outside the image tower
    rec = fl.recommend(model, 200, "output", grouping=fl.Grouping(tower="image"))
    fl.apply(model, rec.plan)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    image = fl.groups(model, tower="image")
    picked = {n for i in rec.trainable_groups for n in image[i].parameter_names}
    assert {n for n in trainable if n.startswith("visual.")} == picked
    # Everything outside the image tower keeps its state: trainable, or frozen by hand.
    outside = {n for n, _ in model.named_parameters() if not n.startswith("visual.")}
    assert trainable & outside == outside - {"text_projection"}
