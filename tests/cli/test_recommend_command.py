"""``frostline recommend``: the recommended plan for a model."""

from __future__ import annotations

from frostline.demo import pretrained_digit_net


def test_recommend_for_input_shift_trains_the_first_group(cli):
    data = cli.json("recommend", "demo", "--n-train", "200", "--shift", "input",
                    "--same-head", "--json")
    assert data["strategy"] == "surgical"
    assert data["trainable_groups"] == [0]
    assert data["summary"]["trainable"] == sum(p.numel() for p in pretrained_digit_net().stem
                                               .parameters())

