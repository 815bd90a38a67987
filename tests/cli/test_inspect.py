"""``frostline inspect``: layer groups of models named on the command line."""

from __future__ import annotations

import pytest

import frostline as fl
from frostline.demo import pretrained_digit_net


@pytest.mark.slow
def test_inspect_resnet18_lists_module_paths_of_each_group(cli):
    done = cli.run("inspect", "timm:resnet18")
    assert done.returncode == 0, done.stderr
    assert "layer4.1" in done.stdout
    assert "timm group_matcher" in done.stdout


def test_inspect_json_gives_every_group_with_parameter_counts(cli):
    data = cli.json("inspect", "demo", "--json")
    model = pretrained_digit_net()
    assert [g["name"] for g in data["groups"]] == fl.groups(model).names
    assert data["total"] == sum(p.numel() for p in model.parameters())
    assert data["groups"][1]["modules"] == ["block1"]


def test_inspect_with_unlocked_groups_counts_what_lock_would_leave_trainable(cli):
    data = cli.json("inspect", "demo", "--unlocked-groups", "2", "--json")
    model = pretrained_digit_net()
    fl.lock(model, 2)
    assert data["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert [g["trainable"] > 0 for g in data["groups"]] == [False, False, False, True, True]


def test_inspect_torchvision_model_builds_without_weights(cli):
    data = cli.json("inspect", "torchvision:resnet18", "--json")
    modules = {m for g in data["groups"] for m in g["modules"]}
    assert any(m.startswith("layer4") for m in modules)


@pytest.mark.slow
def test_inspect_hf_model_type_builds_a_small_model_offline(cli):
    data = cli.json("inspect", "hf:bert", "--json")
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model("bert", hidden_size=64, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=128)
    model = transformers.AutoModel.from_config(config)
    assert data["total"] == sum(p.numel() for p in model.parameters())

