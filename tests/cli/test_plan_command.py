"""``frostline plan``: building, saving and checking plans."""

from __future__ import annotations

import torch

import frostline as fl
from frostline.demo import pretrained_digit_net


def trainable_names(data: dict) -> list[str]:
    return [row["name"] for row in data["parameters"] if row["trainable"]]


def test_plan_json_gives_the_rules_and_each_parameter_state(cli):
    data = cli.json("plan", "demo", "--unlocked-groups", "2", "--freeze", "name:bias",
                    "--freeze-bn-stats", "--json")
    model = pretrained_digit_net()
    fl.apply(model, fl.Plan.from_dict(data["plan"]))
    expected = {n: p.requires_grad for n, p in model.named_parameters()}
    assert {row["name"]: row["trainable"] for row in data["parameters"]} == expected
    assert data["plan"]["rules"] == [{"freeze": "**"}, {"unfreeze": "group:-2:"},
                                     {"freeze": "name:bias"}]
    frozen_groups = set(fl.groups(model).names[:3])
    assert data["frozen_bn_stats"] == [
        name for name, module in model.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d) and name.split(".")[0] in frozen_groups]


def test_plan_rules_apply_in_command_line_order(cli):
    later_freeze = cli.json("plan", "demo", "--unlocked-groups", "0",
                            "--unfreeze", "head.*", "--freeze", "name:bias", "--json")
    later_unfreeze = cli.json("plan", "demo", "--unlocked-groups", "0",
                              "--freeze", "name:bias", "--unfreeze", "head.*", "--json")
    assert trainable_names(later_freeze) == ["head.2.weight"]
    assert trainable_names(later_unfreeze) == ["head.2.weight", "head.2.bias"]


def test_plan_text_names_the_deciding_rule(cli):
    code, out, err = cli.main("plan", "demo", "--unlocked-groups", "1")
    assert code == 0
    out = out
    assert "rule 1: unfreeze group:-1:" in out
    model = pretrained_digit_net()
    head = sum(p.numel() for p in model.head.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert f"trainable {head:,} / {total:,}" in out


def test_plan_save_then_check_round_trips(cli, tmp_path):
    path = str(tmp_path / "plan.yaml")
    saved = cli.json("plan", "demo", "--unlocked-groups", "3", "--freeze", "type:BatchNorm2d",
                     "--freeze-bn-stats", "--save", path, "--json")
    checked = cli.json("plan", "demo", "--check", path, "--json")
    assert checked["plan"] == saved["plan"]
    assert checked["parameters"] == saved["parameters"]
    code, out, err = cli.main("plan", "demo", "--check", path)
    assert code == 0
    assert "valid for demo" in out


def test_check_of_a_rule_that_matches_nothing_exits_2(cli, tmp_path):
    path = tmp_path / "plan.yaml"
    fl.Plan().freeze("layer9.*").save(str(path))
    code, out, err = cli.main("plan", "demo", "--check", str(path))
    assert code == 2
    assert "matches nothing" in cli.error_line(err)


def test_check_of_a_tied_weight_conflict_exits_2(cli, tmp_path, factories):
    path = tmp_path / "plan.yaml"
    fl.Plan().freeze("0.weight").save(str(path))
    code, out, err = cli.main("plan", "cli_factories:tied", "--check", str(path))
    assert code == 2
    assert "same (shared) tensor" in cli.error_line(err)


def test_check_cannot_be_mixed_with_new_rules(cli, tmp_path):
    path = tmp_path / "plan.yaml"
    fl.Plan.lock(1).save(str(path))
    code, out, err = cli.main("plan", "demo", "--check", str(path), "--freeze", "name:bias")
    assert code == 2
    assert "do not combine" in cli.error_line(err)



def test_a_coarse_plan_saved_and_checked_keeps_its_coarse_groups(cli, tmp_path):
    path = str(tmp_path / "coarse.yaml")
    saved = cli.json("plan", "timm:resnet18", "--unlocked-groups", "2", "--coarse",
                     "--save", path, "--json")
    checked = cli.json("plan", "timm:resnet18", "--check", path, "--json")
    fine = cli.json("plan", "timm:resnet18", "--unlocked-groups", "2", "--json")
    assert fl.Plan.load(path).grouping.options() == {"coarse": True}
    assert trainable_names(checked) == trainable_names(saved)
    assert "layer4.0.conv1.weight" in trainable_names(checked)
    assert "layer4.0.conv1.weight" not in trainable_names(fine)
