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
    with pytest.raises(PlanError, match="plan YAML uses the explicit tag"):
        Plan.from_yaml(text)
    assert not marker.exists()


@pytest.mark.parametrize("text", ["rules: !!int ''", "train_bn: !!bool maybe", "rules: !!binary x",
                                  "rules: ! []", "rules: !custom []"])
def test_explicit_tags_are_refused(text):
    # PyYAML's constructors fail on some of them with IndexError or KeyError.
    with pytest.raises(PlanError, match="explicit tag"):
        Plan.from_yaml(text)


def test_missing_plan_file_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError, match=r"cannot read plan file .*nope\.yaml"):
        Plan.load(str(tmp_path / "nope.yaml"))


def test_predicate_selector_cannot_be_written_to_a_file():
    plan = Plan().freeze(fl.where(lambda leaf: True, "anything"))
    with pytest.raises(PlanError, match=r"<where anything> is a Python predicate"):
        plan.to_dict()


# --- hostile plan files --------------------------------------------------------------------------


def _alias_bomb(levels: int, width: int = 10) -> str:
    lines = ["a0: &a0 [x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nversion: *a{levels}\n"


def test_yaml_alias_bomb_is_refused_at_once_with_a_short_message():
    text = _alias_bomb(5)  # 10^5 leaves once expanded; each more level multiplies by 10
    assert len(text) < 400
    with pytest.raises(PlanError, match=r"anchor or alias \('&a0' at line 1, column 5\).*"
                       r"Write the values out") as caught:
        Plan.from_yaml(text)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("text", [
    "rules: &r []\n",
    "rules: []\nfreeze_bn_stats: &t true\ntrain_bn: *t\n",
    "base: &b {train_bn: true}\n<<: *b\nrules: []\n",
])
def test_any_yaml_anchor_or_alias_is_refused(text):
    with pytest.raises(PlanError, match="anchor or alias"):
        Plan.from_yaml(text)


@pytest.mark.parametrize("load, text", [
    (Plan.from_yaml, "rules: " + "[" * 1000 + "]" * 1000),
    (Plan.from_yaml, "rules:\n" + "".join("  " * i + "- \n" for i in range(200))),
    (Plan.from_json, '{"rules": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    (Plan.from_json, '{"rules": ' + "[" * 40 + "]" * 40 + "}"),
])
def test_deep_nesting_is_a_plan_error_not_a_recursion_error(load, text):
    with pytest.raises(PlanError, match=r"nests more than 32 levels"):
        load(text)


@pytest.mark.parametrize("load, text", [
    (Plan.from_yaml, "version: " + "1" * 5000),
    (Plan.from_json, '{"version": ' + "1" * 5000 + "}"),
    (Plan.from_yaml, "unlocked_groups: 2024-13-45"),
])
def test_numbers_python_cannot_read_are_plan_errors(load, text):
    with pytest.raises(PlanError, match="holds a value that cannot be read") as caught:
        load(text)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("text", [
    "version: '" + "v" * 100_000 + "'",
    "rules: [{freeze: [" + ", ".join(["x" * 50] * 2000) + "]}]",
    "rules: [{" + ", ".join(f"k{i}: 1" for i in range(5000)) + "}]",
    "train_bn: " + "y" * 10_000,
    "groups: {spec: " + "s" * 10_000 + "}",
    "{" + ", ".join(f"key{i}: 1" for i in range(5000)) + "}",
])
def test_values_echoed_in_messages_are_cut_short(text):
    with pytest.raises(PlanError) as caught:
        Plan.from_yaml(text)
    assert len(str(caught.value)) < 400


def test_file_larger_than_a_mebibyte_is_refused_unread(tmp_path):
    target = tmp_path / "plan.yaml"
    target.write_text("rules: []\n" + "#" * (1 << 20))
    with pytest.raises(PlanError, match=r"larger than 1048576 bytes"):
        Plan.load(str(target))


PLAN_TEXT = "rules:\n  - freeze: '**'\n  - unfreeze: 'name:bïas'\n"
PLAN = Plan().freeze("**").unfreeze("name:bïas")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_plan_files_in_utf8_with_or_without_bom_and_utf16_32_with_bom_load(
        tmp_path, encoding, suffix):
    target = tmp_path / f"plan{suffix}"
    text = PLAN_TEXT if suffix == ".yaml" else PLAN.to_json()
    target.write_bytes(text.encode(encoding))
    assert Plan.load(str(target)) == PLAN


@pytest.mark.parametrize("encoding, message", [
    ("latin-1", r"is not UTF-8 text: byte b'\\xef' at position 45 cannot be decoded\. Save the "
                r"plan as UTF-8"),
    ("utf-16-le", r"NUL.*UTF-16/32 without a byte-order mark"),
])
def test_plan_files_in_other_encodings_are_refused_clearly(tmp_path, encoding, message):
    target = tmp_path / "plan.yaml"
    target.write_bytes(PLAN_TEXT.encode(encoding))
    with pytest.raises(PlanError, match=message):
        Plan.load(str(target))


def test_from_yaml_and_from_json_take_bytes():
    assert Plan.from_yaml(PLAN_TEXT.encode("utf-16")) == PLAN
    assert Plan.from_json(PLAN.to_json().encode()) == PLAN


def test_a_folder_is_not_a_plan_file(tmp_path):
    with pytest.raises(PlanError, match="cannot read plan file"):
        Plan.load(str(tmp_path))


def test_a_huge_unlocked_groups_is_refused_with_a_short_message():
    with pytest.raises(PlanError, match=r"'unlocked_groups' is <an integer of \d+ bits>; no "
                       r"model has more than 1000000 groups") as caught:
        Plan.from_yaml("unlocked_groups: " + "9" * 4000)
    assert len(str(caught.value)) < 200
