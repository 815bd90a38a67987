"""The recommendation rules: dataset-size thresholds, domain shift, and the plans they give."""

from __future__ import annotations

import pytest

from frostline import GroupError, Plan, PlanError, Recommendation, Thresholds
from frostline.core.recommend import recommend_for_groups


@pytest.mark.parametrize(("n_train", "unlocked"), [
    (0, 1), (299, 1), (300, 2), (999, 2), (1_000, 4), (9_999, 4), (10_000, 8), (1_000_000, 8),
])
def test_size_thresholds_set_how_many_top_groups_train(n_train, unlocked):
    rec = recommend_for_groups(8, n_train)
    assert rec.unlocked_groups == unlocked
    assert rec.trainable_groups == tuple(range(8 - unlocked, 8))
    assert rec.plan.unlocked_groups == unlocked


def test_large_dataset_without_shift_thaws_everything():
    rec = recommend_for_groups(12, 50_000)
    assert rec.strategy == "full-fine-tune"
    assert rec.trainable_groups == tuple(range(12))
    assert not rec.plan.freeze_bn_stats


def test_few_hundred_examples_thaw_the_last_two_groups():
    rec = recommend_for_groups(12, 400)
    assert rec.trainable_groups == (10, 11)
    assert rec.strategy == "partial-fine-tune"


def test_tiny_dataset_is_a_linear_probe():
    rec = recommend_for_groups(6, 120)
    assert (rec.strategy, rec.trainable_groups) == ("linear-probe", (5,))


def test_medium_dataset_thaws_the_top_half_rounded_up():
    assert recommend_for_groups(7, 5_000).trainable_groups == (3, 4, 5, 6)


def test_frozen_groups_keep_their_batchnorm_statistics():
    assert recommend_for_groups(5, 500).plan.freeze_bn_stats
    assert "freeze_bn_stats" in " ".join(recommend_for_groups(5, 500).reasons)


def test_high_shift_unlocks_one_size_class_more():
    assert recommend_for_groups(8, 400, "none").unlocked_groups == 2
    assert recommend_for_groups(8, 400, "high").unlocked_groups == 4
    assert recommend_for_groups(8, 5_000, "high").unlocked_groups == 8


@pytest.mark.parametrize("shift", ["low", "high"])
def test_shift_with_more_than_the_head_recommends_lp_ft(shift):
    rec = recommend_for_groups(8, 2_000, shift)
    assert rec.strategy == "lp-ft"
    assert any("LP-FT" in reason for reason in rec.reasons)


def test_shift_with_only_the_head_stays_a_linear_probe():
    assert recommend_for_groups(8, 50, "low").strategy == "linear-probe"


def test_input_shift_unfreezes_the_first_groups_and_a_new_head():
    rec = recommend_for_groups(6, 500, "input")
    assert rec.strategy == "surgical"
    assert rec.trainable_groups == (0, 1, 5)
    assert [str(rule) for rule in rec.plan.rules] == [
        "freeze **", "unfreeze group::2", "unfreeze group:-1:"]
    assert any("Lee et al." in reason for reason in rec.reasons)


def test_input_shift_with_the_source_head_leaves_the_head_frozen():
    rec = recommend_for_groups(6, 100, "input", new_head=False, calibrated=False)
    assert rec.trainable_groups == (0,)
    assert [str(rule) for rule in rec.plan.rules] == ["freeze **", "unfreeze group::1"]


def test_input_shift_with_a_large_dataset_thaws_everything():
    rec = recommend_for_groups(4, 20_000, "input")
    assert rec.trainable_groups == (0, 1, 2, 3)
    assert rec.strategy == "full-fine-tune"


def test_output_shift_keeps_to_the_top_half():
    rec = recommend_for_groups(3, 400, "output", calibrated=False)
    assert rec.trainable_groups == (1, 2)
    assert recommend_for_groups(3, 5_000, "output", calibrated=False).trainable_groups == (1, 2)
    assert recommend_for_groups(3, 50_000, "output",
                                calibrated=False).trainable_groups == (0, 1, 2)


def test_output_shift_caps_a_small_dataset_at_the_top_half():
    """The cap acts where the size rule asks for more than ceil(G / 2) groups: 2 groups."""
    rec = recommend_for_groups(2, 400, "output", calibrated=False)
    assert rec.trainable_groups == (1,) and rec.strategy == "linear-probe"
    assert "at most the top half (1 groups) trains" in rec.reasons[1]
    assert recommend_for_groups(2, 400, calibrated=False).trainable_groups == (0, 1)


@pytest.mark.parametrize("n_train", [0, 299, 300, 999, 1_000, 9_999])
def test_the_literature_output_rule_never_trains_more_than_the_top_half_below_large(n_train):
    for n_groups in range(1, 41):
        rec = recommend_for_groups(n_groups, n_train, "output", calibrated=False)
        assert len(rec.trainable_groups) <= max(1, -(-n_groups // 2)), n_groups


def test_more_groups_asked_than_exist_are_capped():
    assert recommend_for_groups(1, 500).trainable_groups == (0,)


def test_custom_thresholds_move_the_boundaries():
    rec = recommend_for_groups(6, 500, thresholds=Thresholds(small=10, medium=100, large=400))
    assert rec.unlocked_groups == 6


def test_thresholds_out_of_order_are_an_error():
    with pytest.raises(PlanError, match="small <= medium <= large"):
        Thresholds(small=500, medium=100)


def test_unknown_shift_names_the_choices():
    with pytest.raises(PlanError, match=r"unknown domain_shift 'inptu'.*closest: 'input'"):
        recommend_for_groups(5, 100, "inptu")


@pytest.mark.parametrize("n_train", [-1, 2.5, True])
def test_n_train_must_be_a_non_negative_int(n_train):
    with pytest.raises(PlanError, match="n_train must be a non-negative int"):
        recommend_for_groups(5, n_train)


def test_a_model_without_groups_is_an_error():
    with pytest.raises(GroupError, match="at least one layer group"):
        recommend_for_groups(0, 100)


def test_recommended_plans_round_trip_through_yaml():
    for shift in ("none", "input", "high"):
        plan = recommend_for_groups(6, 700, shift).plan
        assert Plan.from_yaml(plan.to_yaml()) == plan


def test_recommendation_is_a_frozen_value_with_a_dict_form():
    rec = recommend_for_groups(5, 500)
    assert isinstance(rec, Recommendation)
    with pytest.raises(AttributeError):
        rec.unlocked_groups = 3  # type: ignore[misc]
    data = rec.to_dict()
    assert Plan.from_dict(data["plan"]) == rec.plan
    assert data["trainable_groups"] == [3, 4]



def test_calibrated_cells_follow_the_suites_best_form_and_cite_it():
    from frostline.core.evidence import rule_evidence
    from frostline.core.recommend import from_form

    found = rule_evidence()
    assert found  # the evidence ships with frostline
    sizes = {"tiny": 100, "small": 500, "medium": 5_000, "large": 50_000}
    for cell, evidence in found.items():
        size, shift = cell.split("/")
        for n_groups in (3, 5, 8):
            rec = recommend_for_groups(n_groups, sizes[size], shift)
            expected = recommend_for_groups(n_groups, sizes[size], shift, calibrated=False) \
                if evidence.form == "literature" else from_form(evidence.form, n_groups)
            assert (rec.plan, rec.trainable_groups, rec.strategy) == \
                (expected.plan, expected.trainable_groups, expected.strategy)
            assert any(r.startswith(("calibrated on the evaluation suite",
                                     "confirmed on the evaluation suite")) and
                       f"confidence {evidence.confidence}" in r for r in rec.reasons)


def test_an_unmeasured_cell_keeps_the_literature_rule_and_says_so():
    rec = recommend_for_groups(8, 50_000, "low")
    assert rec.plan == recommend_for_groups(8, 50_000, "low", calibrated=False).plan
    assert "confidence unknown" in rec.reasons[-1]


def test_custom_thresholds_fall_back_to_the_literature():
    custom = Thresholds(small=10, medium=20, large=30)
    rec = recommend_for_groups(5, 15, "input", new_head=False, thresholds=custom)
    assert rec.trainable_groups == (0, 1)  # surgical, as the literature says
    assert rec.plan == recommend_for_groups(5, 15, "input", new_head=False, thresholds=custom,
                                            calibrated=False).plan


def test_the_shipped_evidence_is_what_the_recorded_measurements_give():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "calibrate_rules.py"),
                           "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout
