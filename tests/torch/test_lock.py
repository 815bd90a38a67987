"""``fl.lock`` and ``fl.groups`` on real PyTorch models (timm and hand-written)."""

from __future__ import annotations

import pytest
import timm
from tiny_models import HandWritten
from torch import nn

import frostline as fl


def tiny_vit():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                             depth=3, embed_dim=32, num_heads=2, num_classes=5)


def resnet():
    return timm.create_model("resnet18", pretrained=False, num_classes=5)


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def last_groups(model, k, **options):
    found = fl.groups(model, **options)
    return {n for g in found.groups[len(found) - k:] for n in g.parameter_names}


MODELS = {"timm_vit": tiny_vit, "timm_resnet": resnet, "hand_written": HandWritten}


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_lock_keeps_exactly_the_last_k_groups_trainable(make):
    model = make()
    count = len(fl.groups(model))
    for k in range(count + 1):
        plan = fl.lock(model, unlocked_groups=k)
        assert trainable_names(model) == last_groups(model, k), k
        assert plan.unlocked_groups == k


def test_lock_zero_freezes_every_parameter():
    model = tiny_vit()
    fl.lock(model, unlocked_groups=0)
    assert trainable_names(model) == set()


def test_lock_beyond_the_number_of_groups_states_the_count():
    model = HandWritten(depth=4)
    with pytest.raises(fl.GroupError, match=r"the model has 6 groups \(stem, blocks\.0, "
                                            r"blocks\.1, blocks\.2, blocks\.3, head\); use 0\.\.6"):
        fl.lock(model, unlocked_groups=7)
    assert trainable_names(model) == {n for n, _ in model.named_parameters()}


def test_lock_again_with_another_k_relocks_cleanly():
    model, fresh = resnet(), resnet()
    fl.lock(model, unlocked_groups=1)
    fl.lock(model, unlocked_groups=4)
    fl.lock(fresh, unlocked_groups=4)
    assert trainable_names(model) == trainable_names(fresh) == last_groups(fresh, 4)
    fl.lock(model, unlocked_groups=2)
    assert trainable_names(model) == last_groups(model, 2)


def test_lock_returns_the_plan_it_applied():
    model = HandWritten()
    plan = fl.lock(model, unlocked_groups=2, freeze_bn_stats=True)
    assert plan == fl.Plan.lock(2, freeze_bn_stats=True)
    assert fl.filter_spec(model, plan) == {n: p.requires_grad for n, p in model.named_parameters()}


def test_timm_models_use_their_group_matcher_fine_by_default():
    model = resnet()
    fine, coarse = fl.groups(model), fl.groups(model, coarse=True)
    assert fine.source == coarse.source == "timm group_matcher"
    assert fine.names == ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0",
                          "layer3.1", "layer4.0", "layer4.1", "fc"]
    assert coarse.names == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_timm_groups_agree_with_timm_group_parameters():
    from timm.models import group_parameters

    model = resnet()
    expected = [names for _, names in sorted(
        group_parameters(model, model.group_matcher(coarse=False)).items())]
    assert [list(g.parameter_names) for g in fl.groups(model)] == expected


def test_models_without_a_group_matcher_get_stem_blocks_head():
    found = fl.groups(HandWritten(depth=3))
    assert found.source == "auto"
    assert found.names == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert found["stem"].parameter_names == ("embed.weight", "embed.bias")
    assert found["blocks.1"].parameter_names == (
        "blocks.1.fc.weight", "blocks.1.fc.bias", "blocks.1.norm.weight", "blocks.1.norm.bias")


def test_auto_detection_can_be_forced_on_timm_models():
    found = fl.groups(tiny_vit(), auto=True)
    assert found.source == "auto"
    assert found.names == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]


def test_explicit_groups_from_a_list_of_selectors():
    model = HandWritten(depth=4)
    found = fl.groups(model, spec=["embed", "blocks.0 | blocks.1", "blocks.2 | blocks.3", "head"],
                      names=["in", "low", "high", "out"])
    assert found.names == ["in", "low", "high", "out"]
    assert found["high"].parameter_names == tuple(
        n for n, _ in model.named_parameters() if n.startswith(("blocks.2.", "blocks.3.")))
    fl.lock(model, unlocked_groups=2, spec=["embed", "blocks.0 | blocks.1",
                                            "blocks.2 | blocks.3", "head"])
    assert trainable_names(model) == set(found["high"].parameter_names) | set(
        found["out"].parameter_names)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_groups_partition_the_parameters_from_input_to_output(make):
    model = make()
    order = [n for n, _ in model.named_parameters()]
    found = fl.groups(model)
    listed = [n for g in found for n in g.parameter_names]
    assert sorted(listed) == sorted(order)
    firsts = [order.index(g.parameter_names[0]) for g in found]
    assert firsts == sorted(firsts)


def test_explain_says_which_rule_decided_each_parameter():
    model = HandWritten(depth=2)
    plan = fl.Plan().freeze("**").unfreeze("group:-1:").freeze("name:bias")
    explanation = fl.explain(model, plan)
    rows = {row.name: row for row in explanation.rows}
    assert set(rows) == {n for n, _ in model.named_parameters()}
    assert rows["head.weight"].decided_by == "rule 1: unfreeze group:-1:"
    assert rows["head.bias"].decided_by == "rule 2: freeze name:bias"
    assert rows["embed.weight"].decided_by == "rule 0: freeze **"
    assert rows["head.weight"].trainable and not rows["head.bias"].trainable
    assert rows["blocks.1.fc.weight"].group == "blocks.1"
    assert "rule 2: freeze name:bias" in str(explanation)
    assert fl.explain(model, plan).to_dict() == explanation.to_dict()


def test_a_typo_on_a_real_model_names_the_closest_modules():
    model = resnet()
    with pytest.raises(fl.SelectorError, match=r"'layr4\.\*' matches nothing \(closest: "
                                               r"'layer4\.\*'"):
        fl.apply(model, fl.Plan().freeze("layr4.*"))
    assert trainable_names(model) == {n for n, _ in model.named_parameters()}


def test_apply_sets_requires_grad_from_the_plan():
    model = HandWritten(depth=2)
    returned = fl.apply(model, fl.Plan().freeze("blocks").freeze(fl.name("bias")))
    assert returned is model
    assert trainable_names(model) == {"embed.weight", "head.weight"}


def test_group_named_like_an_index_survives_a_yaml_round_trip():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.Linear(4, 4))
    found = fl.groups(model)
    assert found.names == ["stem", "2", "3"]  # the group named "2" is group 1
    plan = fl.Plan().freeze("**").unfreeze(fl.group("2"))
    fl.apply(model, fl.Plan.from_yaml(plan.to_yaml()))
    assert trainable_names(model) == {"2.weight", "2.bias"}


def test_a_coarse_lock_replays_on_a_fresh_model_from_its_saved_plan():
    model = resnet()
    plan = fl.lock(model, unlocked_groups=2, coarse=True)
    assert plan.grouping.options() == {"coarse": True}
    fresh = resnet()
    fl.apply(fresh, fl.Plan.from_yaml(plan.to_yaml()))
    assert {n: p.requires_grad for n, p in fresh.named_parameters()} == {
        n: p.requires_grad for n, p in model.named_parameters()}
    assert fresh.layer4[0].conv1.weight.requires_grad  # coarse: all of layer4 thaws
