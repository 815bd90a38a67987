"""The frost-line sweep: settings, the frozen prefix, and feature caching against plain training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import frostline as fl
from frostline import FrostlineError, Plan, PlanError
from frostline.demo import pretrained_digit_net, reset_head, tasks
from frostline.demo._run import deterministic
from frostline.torch._sweep import (
    Setting,
    _FeatureCache,
    default_settings,
    frozen_prefix,
    sequential_starts,
)


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
    # one deterministic thread (checked in the next test).
    train, val = _new_digits()
    with deterministic():
        result = fl.sweep(_make_new_head, train, val, epochs=2, compare_uncached=True)
    assert result.cached and not result.baseline.cached
    assert [r.label for r in result.rows] == [r.label for r in result.baseline.rows]
    assert [r.val_accuracy for r in result.rows] == [r.val_accuracy for r in result.baseline.rows]
    assert [r.cached_groups for r in result.rows] == [4, 3, 2, 1, 0, 4]
    assert all(r.cached_groups == 0 for r in result.baseline.rows)
    assert len({r.val_accuracy for r in result.rows}) > 1
    assert result.speedup == pytest.approx(result.baseline.seconds / result.seconds)


def test_cached_features_equal_the_prefix_output_on_any_batch():
    model = pretrained_digit_net()
    train, val = _new_digits()
    starts, _ = sequential_starts(model, fl.groups(model))
    cache = _FeatureCache(model, starts, train[0], val[0])
    batch = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(1))[:32]
    with deterministic(), torch.no_grad():
        model.eval()
        direct = model[:3](train[0][batch])
        assert torch.equal(cache.features(3)[0][batch], direct)
        assert torch.equal(cache.features(4)[1], model[:4](val[0]))


def test_deeper_boundaries_are_computed_from_the_shallower_cache():
    model = pretrained_digit_net()
    train, val = _new_digits()
    starts, _ = sequential_starts(model, fl.groups(model))
    cache = _FeatureCache(model, starts, train[0], val[0])
    cache.features(2)
    model.stem.register_forward_hook(lambda *a: pytest.fail("the stem ran again"))
    cache.features(4)
    assert sorted(cache.boundaries) == [0, 1, 2, 3, 4]


def test_the_deepest_boundary_first_leaves_every_shallower_one_cached():
    model = pretrained_digit_net()
    train, val = _new_digits()
    starts, _ = sequential_starts(model, fl.groups(model))
    cache = _FeatureCache(model, starts, train[0], val[0])
    with deterministic(), torch.no_grad():
        deepest = cache.features(4)
        direct = model.eval()[:2](train[0])
    for group in list(model.children())[:4]:
        group.register_forward_hook(lambda *a: pytest.fail("a cached group ran again"))
    assert torch.equal(cache.features(2)[0], direct)
    assert all(b in cache.boundaries for b in (1, 3))
    assert cache.features(4) is deepest


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


def test_parameterless_children_between_groups_run_with_the_later_group():
    model = _mlp()
    starts, note = sequential_starts(model, fl.groups(model))
    assert starts == [0, 1, 3]
    assert "caching on" in note


def test_a_model_that_is_not_a_sequence_of_groups_trains_uncached():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = _mlp()

        def forward(self, x):
            return self.blocks(x)

    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    result = fl.sweep(Residual, (x, y), (x, y), [Setting.lock(1)], epochs=1)
    assert not result.cached
    assert "not an nn.Sequential" in result.notes[0]
    assert result.rows[0].cached_groups == 0


def test_trainable_parameters_are_those_the_setting_unlocks():
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    result = fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(1), Setting.lock(3)], epochs=1)
    assert [r.trainable_params for r in result.rows] == [8 * 2 + 2, 4 * 8 + 8 + 8 * 8 + 8 + 18]


def test_training_memory_grows_with_the_unlocked_groups():
    train, val = _new_digits()
    result = fl.sweep(_make_new_head, train, val, [Setting.lock(1), Setting.lock(5)], epochs=1)
    assert result.rows[0].train_memory_mb < result.rows[1].train_memory_mb


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


def test_a_budget_below_one_epoch_is_an_error():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(PlanError, match="budget must be positive"):
        fl.sweep(_mlp, (x, y), (x, y), epochs=0)


def test_a_setting_that_does_not_fit_the_model_is_a_plan_error():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(PlanError, match="does not fit the model"):
        fl.sweep(_mlp, (x, y), (x, y), [Setting.lock(9)], epochs=1)


def test_default_settings_are_every_frost_line_then_lp_ft():
    settings = default_settings(3)
    assert [s.label for s in settings] == ["1", "2", "3", "LP-FT"]
    assert settings[-1].probe_fraction == 0.5
    assert all(s.plan.freeze_bn_stats for s in settings)


def test_settings_follow_the_recommendation():
    assert Setting.from_recommendation(fl.recommend(_mlp(), 200, "input")).label == \
        "first 1 + head"
    assert Setting.from_recommendation(fl.recommend(_mlp(), 5_000, "low")).label == "LP-FT"
    assert Setting.from_recommendation(fl.recommend(_mlp(), 500)).label == "2"


def test_a_probe_fraction_outside_zero_to_one_is_an_error():
    with pytest.raises(PlanError, match=r"probe_fraction .* \[0, 1\)"):
        Setting.lp_ft(3, probe_fraction=1.0)
