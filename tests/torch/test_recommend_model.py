"""fl.recommend on a real PyTorch model: it counts the model's groups and its plan applies."""

from __future__ import annotations

from torch import nn

import frostline as fl


def _torch_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), *[nn.Sequential(nn.Linear(8, 8), nn.ReLU())
                                            for _ in range(4)], nn.Linear(8, 2))


def test_recommend_counts_the_groups_of_a_model_and_its_plan_applies():
    net = _torch_net()
    rec = fl.recommend(net, n_train=500)
    assert rec.n_groups == len(fl.groups(net)) == 6
    fl.apply(net, rec.plan)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        "4.0.weight", "4.0.bias", "5.weight", "5.bias"]


def test_recommend_for_input_shift_trains_the_first_group_of_a_model():
    net = _torch_net()
    fl.apply(net, fl.recommend(net, 200, "input", new_head=False, calibrated=False).plan)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["0.weight", "0.bias"]


def test_recommend_accepts_precomputed_groups():
    net = _torch_net()
    assert fl.recommend(fl.groups(net), 50_000).trainable_groups == tuple(range(6))
