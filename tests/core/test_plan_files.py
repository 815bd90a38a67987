"""Plans as YAML/JSON files: the schema, its version, round trips and clear errors."""

from __future__ import annotations

import json

import pytest
import yaml

import frostline as fl
from frostline import Plan, PlanError
from frostline.core.plan import SCHEMA_VERSION

FULL = (Plan().freeze("**").unfreeze("group:-2:").freeze("name:bias & !type:LayerNorm")
        .unfreeze("re:'^head\\.'", allow_empty=True).with_bn(freeze_bn_stats=True, train_bn=True))


def test_to_dict_is_the_documented_schema():
    assert FULL.to_dict() == {
        "version": 1,
        "rules": [
            {"freeze": "**"},
            {"unfreeze": "group:-2:"},
            {"freeze": "(name:bias & !type:LayerNorm)"},
            {"unfreeze": "re:^head\\.", "allow_empty": True},
        ],
        "freeze_bn_stats": True,
        "train_bn": True,
    }


@pytest.mark.parametrize("plan", [Plan(), FULL, Plan.lock(3, freeze_bn_stats=True),
                                  Plan().freeze("path:'a b'").unfreeze("class:MLP,Block")])
def test_dict_json_and_yaml_round_trip(plan):
    assert Plan.from_dict(plan.to_dict()) == plan
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_yaml(plan.to_yaml()) == plan


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_and_load_round_trip_through_files(tmp_path, suffix):
    target = tmp_path / f"plan{suffix}"
    FULL.save(str(target))
    assert Plan.load(str(target)) == FULL
    text = target.read_text()
    parsed = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert parsed["version"] == SCHEMA_VERSION


def test_hand_written_yaml_file_loads(tmp_path):
    target = tmp_path / "plan.yaml"
    target.write_text(
        "version: 1\n"
        "rules:\n"
        "  - freeze: '**'\n"
        "  - unfreeze: 'group:-1:'\n"
        "  - freeze: name:bias\n"
        "    allow_empty: true\n"
        "freeze_bn_stats: true\n"
    )
    assert Plan.load(str(target)) == (
        Plan().freeze("**").unfreeze("group:-1:").freeze("name:bias", allow_empty=True)
        .with_bn(freeze_bn_stats=True))


def test_missing_version_reads_as_the_current_one():
    assert Plan.from_dict({"rules": [{"freeze": "**"}]}) == Plan().freeze("**")


def test_unknown_top_level_key_names_it_and_the_allowed_keys():
    with pytest.raises(PlanError, match=r"unknown plan keys \['freeze_bn'\]; allowed keys "
                       r"are \['version', 'rules'"):
        Plan.from_dict({"version": 1, "rules": [], "freeze_bn": True})


def test_unknown_rule_key_names_the_rule():
    with pytest.raises(PlanError, match=r"rule 1 must have exactly one of 'freeze'/'unfreeze'.*"
                       r"got keys \['freez'\]"):
        Plan.from_dict({"rules": [{"freeze": "**"}, {"freez": "name:bias"}]})


def test_rule_with_both_actions_is_refused():
    with pytest.raises(PlanError, match=r"rule 0 must have exactly one of"):
        Plan.from_dict({"rules": [{"freeze": "**", "unfreeze": "head"}]})


@pytest.mark.parametrize("version", [2, 0, "1", 1.0, True, None])
def test_other_schema_versions_are_refused(version):
    with pytest.raises(PlanError, match=rf"plan schema version {version!r} is not supported; "
                       r"this frostline reads version 1"):
        Plan.from_dict({"version": version, "rules": []})


@pytest.mark.parametrize(("data", "message"), [
    ({"rules": "freeze **"}, r"'rules' must be a list, got str"),
    ({"rules": ["freeze **"]}, r"rule 0 must be a mapping like \{freeze: 'name:bias'\}"),
    ({"rules": [{"freeze": ["a", "b"]}]}, r"rule 0: the selector must be a string, got \['a'"),
    ({"rules": [{"freeze": "**", "allow_empty": "yes"}]},
     r"rule 0: 'allow_empty' must be true or false, got 'yes'"),
    ({"rules": [], "freeze_bn_stats": 1}, r"'freeze_bn_stats' must be true or false, got 1"),
    ({"rules": [], "train_bn": "false"}, r"'train_bn' must be true or false, got 'false'"),
    ({"rules": [], "unlocked_groups": -1}, r"'unlocked_groups' must be a non-negative int"),
    ({"rules": [], "unlocked_groups": True}, r"'unlocked_groups' must be a non-negative int"),
    (["freeze", "**"], r"a plan must be a mapping with 'rules', got list"),
])
def test_wrong_types_say_what_was_expected(data, message):
    with pytest.raises(PlanError, match=message):
        Plan.from_dict(data)


@pytest.mark.parametrize(("selector", "message"), [
    ("encoder.layer.* &", r"rule 0: bad selector at position 17: expected a selector"),
    ("nmae:bias", r"rule 0: bad selector at position 0: expected a prefix among name, path"),
    ('re:"(unclosed"', r"rule 0: bad selector .*invalid regular expression"),
    ("group:1:2:3:4", r"rule 0: bad selector .*a group slice has at most start:stop:step"),
    ("kind:weights", r"rule 0: bad selector .*unknown kind 'weights'"),
    ("", r"rule 0: bad selector at position 0: expected a selector, found an empty string"),
])
def test_bad_selector_strings_are_plan_errors_with_the_position(selector, message):
    with pytest.raises(PlanError, match=message):
        Plan.from_dict({"rules": [{"freeze": selector}]})


def test_invalid_yaml_and_json_are_plan_errors():
    with pytest.raises(PlanError, match="plan is not valid YAML"):
        Plan.from_yaml("rules: [freeze: **")
    with pytest.raises(PlanError, match="plan is not valid JSON"):
        Plan.from_json("{'rules': []}")


def test_yaml_python_tags_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "ran"
    text = f"!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path " \
           f"['{marker}']]"
    with pytest.raises(PlanError, match="plan is not valid YAML"):
        Plan.from_yaml(text)
    assert not marker.exists()


def test_missing_plan_file_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError, match=r"cannot read plan file .*nope\.yaml"):
        Plan.load(str(tmp_path / "nope.yaml"))


def test_predicate_selector_cannot_be_written_to_a_file():
    plan = Plan().freeze(fl.where(lambda leaf: True, "anything"))
    with pytest.raises(PlanError, match=r"<where anything> is a Python predicate"):
        plan.to_dict()
