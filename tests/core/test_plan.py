"""Plans: rule order, defaults, BatchNorm policy, serialisation, explain and empty selectors."""

from __future__ import annotations

import dataclasses
import json

import pytest

import frostline as fl
from frostline.core.mask import Mask


def trainable(plan, view, groups=None):
    return plan.evaluate(view, groups).as_dict()


def test_everything_is_trainable_by_default(toy_view):
    mask = fl.Plan().evaluate(toy_view)
    assert all(mask.trainable)
    assert set(mask.decided_by) == {None}


def test_last_matching_rule_wins(toy_view):
    plan = fl.Plan().freeze("**").unfreeze("name:A").freeze("name:bias")
    state = trainable(plan, toy_view)
    for name, value in state.items():
        in_a = name.startswith("A.")
        assert value == (in_a and not name.endswith(".bias")), name


def test_decided_by_names_the_last_matching_rule(toy_view):
    plan = fl.Plan().freeze("**").unfreeze("name:A").freeze("name:bias")
    mask = plan.evaluate(toy_view)
    assert mask.decided_by[toy_view.names.index("A.fc1.weight")] == 1
    assert mask.decided_by[toy_view.names.index("A.fc1.bias")] == 2
    assert mask.decided_by[toy_view.names.index("head.weight")] == 0


def test_plans_are_immutable_and_builders_return_new_plans():
    base = fl.Plan()
    frozen = base.freeze("name:bias")
    assert base.rules == ()
    assert len(frozen.rules) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.rules = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.rules[0].action = "unfreeze"


def test_unknown_rule_action_is_a_plan_error():
    with pytest.raises(fl.PlanError, match="unknown rule action 'thaw'"):
        fl.Rule("thaw", fl.name("bias"))


def test_group_rules_follow_the_groups(toy_view, toy_groups):
    state = trainable(fl.Plan().freeze("**").unfreeze("group:-2:"), toy_view, toy_groups)
    unlocked = set(toy_groups["layer1"].leaf_names) | set(toy_groups["head"].leaf_names)
    assert {n for n, t in state.items() if t} == unlocked


def test_lock_plan_freezes_all_but_the_last_k_groups(toy_view, toy_groups):
    for k in range(len(toy_groups) + 1):
        state = trainable(fl.Plan.lock(k), toy_view, toy_groups)
        unlocked = {n for g in toy_groups.groups[len(toy_groups) - k:] for n in g.leaf_names}
        assert {n for n, t in state.items() if t} == unlocked, k


def test_lock_beyond_the_number_of_groups_is_a_group_error(toy_view, toy_groups):
    with pytest.raises(fl.GroupError, match=r"cannot unlock 5 groups: the model has 4 groups"):
        fl.Plan.lock(5).evaluate(toy_view, toy_groups)


@pytest.mark.parametrize("bad", [-1, 1.0, True, "2"])
def test_lock_needs_a_non_negative_int(bad):
    with pytest.raises(fl.PlanError, match="non-negative int"):
        fl.Plan.lock(bad)


def test_freeze_bn_stats_fixes_stats_of_bn_modules_whose_stats_are_frozen(toy_view):
    plan = fl.Plan().freeze("bn | head").with_bn(freeze_bn_stats=True)
    assert plan.evaluate(toy_view).frozen_stats == ("bn",)
    assert fl.Plan().freeze("bn").evaluate(toy_view).frozen_stats == ()


def test_freeze_bn_stats_leaves_trainable_bn_stats_alone(toy_view):
    plan = fl.Plan().freeze("head").with_bn(freeze_bn_stats=True)
    assert plan.evaluate(toy_view).frozen_stats == ()


def test_train_bn_keeps_norm_affine_parameters_trainable(toy_view):
    mask = fl.Plan().freeze("**").with_bn(train_bn=True).evaluate(toy_view)
    state = mask.as_dict()
    norm_params = {"bn.weight", "bn.bias", "encoder.layer.0.norm.weight",
                   "encoder.layer.0.norm.bias", "encoder.layer.1.norm.weight",
                   "encoder.layer.1.norm.bias"}
    assert {n for n, t in state.items() if t} == norm_params
    assert mask.decided_by[toy_view.names.index("bn.weight")] == Mask.TRAIN_BN


def test_selector_matching_nothing_lists_the_closest_names(make_view):
    view = make_view(["layer3.0.weight", "layer4.0.weight", "layer4.1.weight", "fc.weight"], {})
    with pytest.raises(fl.SelectorError,
                       match=r"rule 1 \(freeze layr4\.\*\) matches nothing.*closest: 'layer4\.\*'"):
        fl.Plan().freeze("fc").freeze("layr4.*").evaluate(view)


def test_name_typo_suggests_existing_keys(toy_view):
    with pytest.raises(fl.SelectorError, match=r"'name:bais' matches nothing \(closest: "
                                                r"'name:bias'"):
        fl.Plan().freeze("name:bais").evaluate(toy_view)


def test_type_typo_suggests_existing_class_names(toy_view):
    with pytest.raises(fl.SelectorError, match=r"closest: 'type:LayerNorm'"):
        fl.Plan().freeze("type:LayerNrom").evaluate(toy_view)


def test_empty_part_of_a_combination_is_named(toy_view):
    with pytest.raises(fl.SelectorError, match=r"'name:bais' matches nothing"):
        fl.Plan().freeze(fl.name("A") & fl.name("bais")).evaluate(toy_view)


def test_disjoint_parts_that_each_match_are_explained(toy_view):
    with pytest.raises(fl.SelectorError, match="each part matches something, but together"):
        fl.Plan().freeze("name:A & name:head").evaluate(toy_view)


def test_allow_empty_opts_a_rule_out_of_the_check(toy_view):
    plan = fl.Plan().freeze("name:bias").unfreeze("name:nothing_here", allow_empty=True)
    state = trainable(plan, toy_view)
    assert {n for n, t in state.items() if not t} == {
        n for n in toy_view.names if n.endswith(".bias")}


def test_evaluation_raises_tied_weight_error_naming_both_paths(make_view):
    from frostline.core.leaves import Leaf, TreeView

    base = make_view(["emb.weight", "body.weight", "out.weight"], {})
    leaves = list(base.leaves)
    leaves[0] = dataclasses.replace(leaves[0], tied_to=("out.weight",))
    leaves[2] = dataclasses.replace(leaves[2], tied_to=("emb.weight",))
    view = TreeView(tuple(leaves))
    assert isinstance(leaves[0], Leaf)
    with pytest.raises(fl.TiedWeightError,
                       match=r"'emb\.weight' and 'out\.weight' are the same \(shared\) tensor"):
        fl.Plan().freeze("emb").evaluate(view)
    state = trainable(fl.Plan().freeze("emb | out"), view)
    assert state == {"emb.weight": False, "body.weight": True, "out.weight": False}


ROUND_TRIP_PLANS = [
    fl.Plan(),
    fl.Plan().freeze("**").unfreeze("group:-2:").freeze("name:bias"),
    fl.Plan().freeze(fl.path("encoder.layer.*") & ~fl.module_type("LayerNorm"))
    .unfreeze(fl.regex(r'(q|k)\.w "x"'), allow_empty=True).with_bn(freeze_bn_stats=True,
                                                                   train_bn=True),
    fl.Plan.lock(3, freeze_bn_stats=True),
]


@pytest.mark.parametrize("plan", ROUND_TRIP_PLANS, ids=str)
def test_plans_round_trip_through_dict_json_and_yaml(plan):
    assert fl.Plan.from_dict(plan.to_dict()) == plan
    assert fl.Plan.from_json(plan.to_json()) == plan
    assert fl.Plan.from_yaml(plan.to_yaml()) == plan


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_plans_round_trip_through_files(tmp_path, suffix):
    plan = ROUND_TRIP_PLANS[2]
    target = tmp_path / f"plan{suffix}"
    plan.save(str(target))
    assert fl.Plan.load(str(target)) == plan


def test_plan_dict_is_plain_data():
    data = fl.Plan().freeze("**").unfreeze("name:head", allow_empty=True).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["rules"] == [{"freeze": "**"}, {"unfreeze": "name:head", "allow_empty": True}]


def test_yaml_python_tags_are_refused_without_running_code():
    text = "!!python/object/apply:os.system ['echo owned']\n"
    with pytest.raises(fl.PlanError, match="explicit tag 'tag:yaml.org,2002:python/object/apply"):
        fl.Plan.from_yaml(text)
    tagged = "rules: !!python/object:collections.OrderedDict {}\n"
    with pytest.raises(fl.PlanError, match=r"explicit tag .*line 1, column 8"):
        fl.Plan.from_yaml(tagged)


@pytest.mark.parametrize("data, message", [
    ([], "must be a mapping"),
    ({"rules": [], "colour": 1}, r"unknown plan keys \['colour'\]"),
    ({"version": 2, "rules": []}, "schema version 2 is not supported"),
    ({"rules": "freeze **"}, "'rules' must be a list"),
    ({"rules": [{"freeze": "**", "unfreeze": "x"}]}, "exactly one of 'freeze'/'unfreeze'"),
    ({"rules": ["freeze **"]}, "rule 0 must be a mapping"),
    ({"rules": [{"freeze": 3}]}, "the selector must be a string"),
    ({"rules": [{"freeze": "**", "allow_empty": "yes"}]}, "'allow_empty' must be true or false"),
    ({"rules": [{"freeze": "nmae:bias"}]}, "rule 0: bad selector at position 0"),
    ({"rules": [], "freeze_bn_stats": "yes"}, "'freeze_bn_stats' must be true or false"),
    ({"rules": [], "unlocked_groups": -1}, "'unlocked_groups' must be a non-negative int"),
])
def test_malformed_plan_data_is_a_plan_error(data, message):
    with pytest.raises(fl.PlanError, match=message):
        fl.Plan.from_dict(data)


def test_invalid_json_is_a_plan_error():
    with pytest.raises(fl.PlanError, match="not valid JSON"):
        fl.Plan.from_json("{rules: ")


def test_missing_plan_file_is_a_plan_error(tmp_path):
    with pytest.raises(fl.PlanError, match="cannot read plan file"):
        fl.Plan.load(str(tmp_path / "absent.yaml"))


def test_predicate_selectors_cannot_be_saved():
    plan = fl.Plan().freeze(fl.where(lambda leaf: True, "always"))
    with pytest.raises(fl.PlanError, match="<where always> is a Python predicate"):
        plan.to_dict()


def test_plan_prints_its_rules_and_flags():
    assert str(fl.Plan.lock(2, freeze_bn_stats=True)) == (
        "Plan(freeze **, unfreeze group:-2:; freeze_bn_stats, unlocked_groups=2)")
    assert str(fl.Plan()) == "Plan(everything trainable)"


def test_grouping_options_travel_with_the_plan_through_yaml():
    plan = fl.Plan.lock(2).with_grouping(tower="visual", coarse=True, spec=["stem", "blocks.*"])
    loaded = fl.Plan.from_yaml(plan.to_yaml())
    assert loaded == plan
    assert loaded.grouping.options() == {"coarse": True, "spec": ("stem", "blocks.*"),
                                         "tower": "visual"}


def test_grouping_given_later_overrides_only_the_fields_it_sets():
    plan = fl.Plan.lock(1).with_grouping(tower="visual", coarse=True)
    assert plan.with_grouping(coarse=False).grouping == fl.Grouping(tower="visual", coarse=False)
    assert fl.Grouping(coarse=False).over(plan.grouping).tower == "visual"


@pytest.mark.parametrize(("options", "message"), [
    ({"coarse": "yes"}, "'coarse' must be true or false"),
    ({"spec": "stem"}, "'spec' must be a list"),
])
def test_bad_grouping_options_are_plan_errors(options, message):
    with pytest.raises(fl.PlanError, match=message):
        fl.Plan().with_grouping(**options)
    with pytest.raises(fl.PlanError, match=message):
        fl.Plan.from_dict({"rules": [], "groups": options})


def test_an_example_input_cannot_be_stored_in_a_plan_file():
    with pytest.raises(fl.PlanError, match="unknown grouping option.*example_input"):
        fl.Plan.from_dict({"rules": [], "groups": {"example_input": 3}})
    plan = fl.Plan.lock(1).with_grouping(example_input=3)
    assert "example_input" not in plan.to_dict().get("groups", {})
