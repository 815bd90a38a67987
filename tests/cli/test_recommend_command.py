"""``frostline recommend``: the recommended plan for a model."""

from __future__ import annotations

import frostline as fl
from frostline.demo import pretrained_digit_net


def test_recommend_for_input_shift_trains_the_first_group(cli):
    data = cli.json("recommend", "demo", "--n-train", "200", "--shift", "input",
                    "--same-head", "--literature", "--json")
    assert data["strategy"] == "surgical"
    assert data["trainable_groups"] == [0]
    assert data["summary"]["trainable"] == sum(p.numel() for p in pretrained_digit_net().stem
                                               .parameters())



def test_recommend_follows_the_calibrated_rule_and_says_how_sure_it_is(cli):
    from frostline.core.evidence import rule_evidence

    found = rule_evidence()["tiny/input"]
    data = cli.json("recommend", "demo", "--n-train", "200", "--shift", "input",
                    "--same-head", "--json")
    assert data["plan"] == fl.recommend(pretrained_digit_net(), 200, "input",
                                        new_head=False).plan.to_dict()
    assert data["plan"] != fl.recommend(pretrained_digit_net(), 200, "input", new_head=False,
                                        calibrated=False).plan.to_dict()
    (reason,) = [r for r in data["reasons"] if r.startswith("calibrated on the evaluation suite")]
    assert f"{100 * found.min_share:.1f}%" in reason
    assert f"confidence {found.confidence}" in reason
