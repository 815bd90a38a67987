"""``fl.choose``: the measured recommendation, its reasons, and the LP-FT schedule it returns."""

from __future__ import annotations

import torch
from torch import nn

import frostline as fl
from frostline.core.recommend import PROBE
from frostline.demo import pretrained_digit_net, reset_head, tasks
from frostline.demo._run import deterministic
from frostline.torch._sweep import Setting
from frostline.torch._sweep._choose import _schedule, candidates


def _new_digits(n: int = 160):
    task = tasks()[0]
    return (task.train[0][:n], task.train[1][:n]), (task.val[0][:n], task.val[1][:n])


def _make() -> nn.Module:
    return reset_head(pretrained_digit_net(), 5)


def test_choose_recommends_the_best_measured_setting_with_reasons_citing_its_numbers():
    train, val = _new_digits()
    with deterministic():
        choice = fl.choose(_make, train, val, shift="output", epochs=4)
        full = fl.sweep(_make, train, val, candidates(5, Setting.lock(1), True), epochs=4,
                        min_steps=100)
    rec, best = choice.recommendation, choice.result.best
    assert isinstance(rec, fl.Recommendation)
    assert rec.plan == best.setting.plan
    assert rec.n_groups == 5
    assert choice.prior == fl.recommend(_make(), 160, "output")
    text = "\n".join(rec.reasons)
    assert f"{100 * best.val_accuracy:.1f}%" in text
    assert f"{len(choice.result.pruned)} of {len(choice.result.rows)} settings" in text
    assert "rankings that early are noisy" not in text  # 100 steps: 7 batches at the first rung
    # Halving keeps the full sweep's best within one point on the demo task, at less cost.
    assert best.val_accuracy >= full.best.val_accuracy - 0.01
    assert sum(r.epochs for r in choice.result.rows) < sum(r.epochs for r in full.rows)
    assert choice.seconds >= choice.result.seconds


def test_a_first_rung_of_a_few_batches_is_named_in_the_reasons():
    train, val = _new_digits(64)
    with deterministic():
        choice = fl.choose(_make, train, val, shift="output", epochs=2, min_steps=0)
    assert choice.result.pruned
    assert "the first rung trained only 1 batch of 4: rankings that early are noisy" in \
        "\n".join(choice.recommendation.reasons)


def test_trainable_groups_follow_the_chosen_plan():
    train, val = _new_digits(64)
    with deterministic():
        choice = fl.choose(_make, train, val, epochs=2, min_steps=0, halving=None)
    rec = choice.recommendation
    model = _make()
    fl.apply(model, rec.plan)
    groups = fl.groups(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert rec.trainable_groups == tuple(
        i for i, g in enumerate(groups) if set(g.leaf_names) & trainable)
    assert rec.unlocked_groups == len(rec.trainable_groups)


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def test_an_lp_ft_recommendation_carries_a_runnable_two_phase_schedule():
    x, y = torch.randn(48, 4), torch.randint(0, 2, (48,))
    result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lp_ft(3)], epochs=3, lr=1e-2,
                      body_lr=1e-3)
    probe, fine_tune = _schedule(result.rows[0])
    assert probe.plan == PROBE and probe.epochs == 2
    assert fine_tune.plan == Setting.lp_ft(3).plan and fine_tune.epochs == 3
    assert (fine_tune.lr, fine_tune.body_lr) == (1e-2, 1e-3)
    # Running it: the probe phase trains the head alone, the second phase the rest too.
    model = _mlp()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    for phase, moved in ((probe, {"4.weight", "4.bias"}), (fine_tune, set(start))):
        fl.apply(model, phase.plan)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
        assert changed == moved


def test_rule_based_lp_ft_recommendations_schedule_the_probe_first():
    rec = fl.recommend(nn.Sequential(*[nn.Linear(4, 4) for _ in range(5)]), 5_000, "low")
    assert rec.strategy == "lp-ft"
    assert [p.name for p in rec.schedule] == ["linear probe", "fine-tune"]
    assert rec.schedule[0].plan == PROBE and rec.schedule[1].plan == rec.plan
    assert "phase 1. linear probe" in str(rec)
    assert rec.to_dict()["schedule"][1]["plan"] == rec.plan.to_dict()
    plain = fl.recommend(nn.Sequential(*[nn.Linear(4, 4) for _ in range(5)]), 500)
    assert [p.plan for p in plain.schedule] == [plain.plan]


def test_candidates_start_with_the_prior_and_hold_each_setting_once():
    found = candidates(5, Setting.lp_ft(2), new_head=False)
    assert found[0] == Setting.lp_ft(2)
    assert len(found) == len(set(found))
    assert {Setting.lock(k) for k in range(1, 6)} <= set(found)
    assert Setting.surgical(1, head=False) in found and Setting.lp_ft(5) in found
