"""The frost-line sweep: settings, the frozen prefix, budgets, and what the result reports."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import frostline as fl
from frostline import FrostlineError, Plan, PlanError
from frostline.demo import pretrained_digit_net, reset_head, tasks
from frostline.demo._run import deterministic
from frostline.torch._sweep import (
    FeatureCache,
    LearningRates,
    Setting,
    default_settings,
    frozen_prefix,
)
from frostline.torch._sweep._data import objective, source
from frostline.torch._sweep._train import Context, Run


def _new_digits(n_train: int = 96, n_val: int = 128):
    task = tasks()[0]
    train = (task.train[0][:n_train], task.train[1][:n_train])
    val = (task.val[0][:n_val], task.val[1][:n_val])
    return train, val


def _make_new_head() -> nn.Module:
    return reset_head(pretrained_digit_net(), 5)


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def test_cached_sweep_reaches_the_same_accuracies_as_uncached_training():
    # Exact equality holds because both runs see the same seed and batches, the frozen prefix
    # runs in eval mode in both, and its cached outputs equal the per-batch ones bit for bit on
    # one deterministic thread.
    train, val = _new_digits()
    with deterministic():
        result = fl.sweep(_make_new_head, train, val, epochs=2, compare_uncached=True)
    assert result.cached and not result.baseline.cached
    assert [r.label for r in result.rows] == [r.label for r in result.baseline.rows]
    assert [r.val_accuracy for r in result.rows] == [r.val_accuracy for r in result.baseline.rows]
    assert [r.cached_groups for r in result.rows] == [4, 3, 2, 1, 0, 4]
    assert all(r.cached_groups == 0 for r in result.baseline.rows)
    assert len({r.val_accuracy for r in result.rows}) > 1


class _Slow(nn.Module):
    """Spins for a fixed CPU time per call and counts its calls: a known share of any timing,
    in wall time and in process CPU time alike."""

    def __init__(self, inner: nn.Module, seconds: float) -> None:
        super().__init__()
        self.inner, self.seconds, self.calls = inner, seconds, 0

    def forward(self, x):
        self.calls += 1
        # This thread's CPU time: it bounds both the wall time and the process CPU time from
        # below (process time alone also counts torch's worker threads, which can make S
        # seconds of it pass in less than S of wall time).
        end = time.thread_time() + self.seconds
        while time.thread_time() < end:
            pass
        return self.inner(x)


def test_reported_times_are_bounded_by_known_sleeps_and_an_outside_stopwatch():
    # An independent oracle for the timing figures: the frozen first group spins S seconds of
    # CPU per call, so whatever span ran it N times lasted at least N * S (wall and CPU time);
    # the sweep's own spans are disjoint parts of the call, so together they fit in the time
    # measured around it.
    S = 0.02
    slow = _Slow(nn.Linear(4, 8), S)
    make = lambda: nn.Sequential(slow, nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))  # noqa: E731
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    settings = [Setting.lock(1), Setting.lock(2)]
    calls = []
    original = FeatureCache.prepare

    def counted_prepare(self, wanted):
        before = slow.calls
        original(self, wanted)
        calls.append(slow.calls - before)

    start, cpu = time.perf_counter(), time.process_time()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FeatureCache, "prepare", counted_prepare)
        result = fl.sweep(make, (x, y), (x, y), settings, epochs=2, batch_size=16,
                          compare_uncached=True)
    outside, outside_cpu = time.perf_counter() - start, time.process_time() - cpu
    (build_calls,) = calls
    assert build_calls >= 2  # the training and the validation examples, once each
    # The cache's build (where the slow group ran) is inside the cached sweep's time.
    assert result.cache_seconds >= build_calls * S
    # The slow group never runs in the cached rows (it is stubbed): the sweep's time beyond
    # its rows' holds at least its known cost in the build.
    assert result.seconds - sum(r.seconds for r in result.rows) >= build_calls * S
    # Uncached: the slow group runs on every training step (4 per epoch) and evaluation batch.
    for row in result.baseline.rows:
        assert row.epoch_seconds >= 4 * S
        assert row.seconds >= row.epochs * 4 * S
    assert result.seconds + result.baseline.seconds <= outside
    assert result.speedup >= 2 * 2 * 4 * S / (outside - 2 * 2 * 4 * S)
    cached_settings = result.cached_speedup
    assert cached_settings is not None and cached_settings >= 2 * 2 * 4 * S / outside
    # The same in CPU time.
    assert result.cache_cpu_seconds >= build_calls * S
    assert result.cpu_seconds - sum(r.cpu_seconds for r in result.rows) >= build_calls * S
    assert result.baseline.cpu_seconds >= 2 * 2 * 4 * S
    assert result.cpu_seconds + result.baseline.cpu_seconds <= outside_cpu
    assert result.cpu_speedup >= 2 * 2 * 4 * S / (outside_cpu - 2 * 2 * 4 * S)


def test_trainable_parameters_are_those_the_setting_unlocks():
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(1), Setting.lock(3)], epochs=1)
    assert [r.trainable_params for r in result.rows] == [8 * 2 + 2, 4 * 8 + 8 + 8 * 8 + 8 + 18]


def test_training_memory_grows_with_the_unlocked_groups():
    train, val = _new_digits()
    result = fl.sweep(_make_new_head, train, val, [Setting.lock(1), Setting.lock(5)], epochs=1)
    assert result.rows[0].train_memory_mb < result.rows[1].train_memory_mb


def test_lp_ft_fine_tunes_for_the_whole_budget_after_its_probe():
    # round(3 * 0.5) == 2 used to leave LP-FT one fine-tuning epoch of three.
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(3), Setting.lp_ft(3)], epochs=3,
                      batch_size=10)
    lock, lp_ft = result.rows
    assert lock.steps == 3 * 4
    assert lp_ft.epochs == 2 + 3 and lp_ft.steps == (2 + 3) * 4
    assert Setting.lp_ft(3).phases(3) == [(Plan.lock(1, freeze_bn_stats=True), 2),
                                          (Plan.lock(3, freeze_bn_stats=True), 3)]


def test_min_steps_raises_the_epochs_of_a_small_data_set():
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(1)], epochs=2, batch_size=10,
                      min_steps=30)
    assert result.rows[0].steps == 30 and result.rows[0].epochs == 15
    assert "15 epochs per setting instead of 2" in result.notes[0]


def test_head_and_body_learning_rates_and_a_grid_pick_the_best_pair():
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    one = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(3)], epochs=2, lr=1e-2, body_lr=1e-4)
    assert (one.rows[0].lr.head, one.rows[0].lr.body) == (1e-2, 1e-4)
    grid = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(3)], epochs=2,
                    lr_grid=[(1e-6, 1e-6), (1e-2, 1e-4)])
    row = grid.rows[0]
    scores = dict(((lr.head, lr.body), value) for lr, value in row.grid)
    assert scores[(1e-2, 1e-4)] == one.rows[0].val_accuracy  # same seed, same run
    assert row.val_accuracy == max(scores.values())
    assert (row.lr.head, row.lr.body) == max(scores, key=scores.get)


def test_the_head_learning_rate_moves_only_the_head():
    # With the body's rate tiny, the body barely moves and the head moves a lot: the two
    # parameter groups got the two rates.
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    torch.manual_seed(0)
    before = _mlp()
    src = source((x, y), "training")
    ctx = Context(_mlp, fl.groups(before), None, None, None, src, src, objective(None, None),
                  epochs=2, batch_size=16, seed=0, device=None)
    run = Run(ctx, Setting.lock(3), LearningRates(1e-1, 1e-7))
    run.advance(2)
    finals = dict(run.model.named_parameters())
    head_moved = (finals["4.weight"] - before[4].weight).abs().max().item()
    body_moved = (finals["0.weight"] - before[0].weight).abs().max().item()
    assert head_moved > 1e-2 and 0 < body_moved < 1e-5


def test_make_model_returning_other_weights_is_refused_with_the_cache():
    calls = []

    def drifting() -> nn.Module:
        model = _mlp()
        with torch.no_grad():
            model[0].weight.add_(len(calls))
        calls.append(1)
        return model

    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with pytest.raises(FrostlineError, match=r"different weights for '0.weight'"):
        fl.sweep(drifting, (x, y), (x, y), [Setting.lock(1)], epochs=1)


def test_make_model_returning_other_batchnorm_statistics_is_refused_with_the_cache():
    # Buffers count: other running statistics would give other cached features.
    calls = []

    def drifting() -> nn.Module:
        model = _make_new_head()
        model.stem[1].running_mean.add_(len(calls))
        calls.append(1)
        return model

    train, val = _new_digits(32, 32)
    with pytest.raises(FrostlineError, match=r"different weights for 'stem.1.running_mean'"):
        fl.sweep(drifting, train, val, [Setting.lock(1)], epochs=1)


def test_a_budget_below_one_epoch_is_an_error():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(PlanError, match="budget must be positive"):
        fl.sweep(_mlp, (x, y), (x, y), epochs=0)


def test_a_setting_that_does_not_fit_the_model_is_a_plan_error():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(PlanError, match="does not fit the model"):
        fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(9)], epochs=1)


def test_frozen_prefix_counts_leading_groups_frozen_with_their_statistics():
    model = pretrained_digit_net()
    groups, view = fl.groups(model), fl.view(model)

    def prefix(plan: Plan) -> int:
        return frozen_prefix(groups, plan.evaluate(view, groups), view)

    assert prefix(Plan.lock(2, freeze_bn_stats=True)) == 3
    assert prefix(Plan.lock(0, freeze_bn_stats=True)) == 5
    # BatchNorm statistics that still update make the group's output change: not cacheable.
    assert prefix(Plan.lock(2)) == 0
    assert prefix(Setting.surgical(1).plan) == 0


def test_default_settings_are_every_frost_line_then_lp_ft():
    settings = default_settings(3)
    assert [s.label for s in settings] == ["1", "2", "3", "LP-FT 3"]
    assert settings[-1].probe_fraction == 0.5
    assert all(s.plan.freeze_bn_stats for s in settings)


def test_settings_are_told_apart_by_value():
    assert Setting.lp_ft(2) != Setting.lp_ft(5)
    assert Setting.lp_ft(2).label != Setting.lp_ft(5).label
    assert Setting.lp_ft(2) == Setting.lp_ft(2)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lp_ft(3), Setting.lp_ft(2)], epochs=1)
    assert result.row(Setting.lp_ft(2)).unlocked_groups == 2
    assert result.row(Setting.lp_ft(2)).trainable_params == 8 * 8 + 8 + 18


def test_settings_follow_the_recommendation():
    assert Setting.from_recommendation(fl.recommend(_mlp(), 200, "input",
                                                       calibrated=False)).label == \
        "first 1 + head"
    assert Setting.from_recommendation(fl.recommend(_mlp(), 5_000, "low")) == Setting.lp_ft(2)
    assert Setting.from_recommendation(fl.recommend(_mlp(), 500)).label == "2"


def test_a_probe_fraction_outside_zero_to_one_is_an_error():
    with pytest.raises(PlanError, match=r"probe_fraction .* \[0, 1\]"):
        Setting.lp_ft(3, probe_fraction=1.5)
    with pytest.raises(PlanError, match="needs a probe phase"):
        Setting.lp_ft(3, probe_fraction=0.0)
