"""Successive halving: survivors end exactly where a full run ends; the pruned are recorded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import frostline as fl
from frostline import PlanError
from frostline.demo import pretrained_digit_net, reset_head, tasks
from frostline.demo._run import deterministic
from frostline.torch._sweep import Setting


def _dropout_net() -> nn.Sequential:
    # Dropout above every frost line: training draws random numbers, so candidates trained in
    # turns must each keep their own random state to match uninterrupted runs.
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.Dropout(0.3),
                         nn.ReLU(), nn.Linear(16, 16), nn.Dropout(0.3), nn.ReLU(),
                         nn.Linear(16, 2))


def test_survivors_equal_the_full_sweep_and_the_pruned_are_listed_by_rung():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    settings = [Setting.lock(k) for k in (1, 2, 3, 4)] + [Setting.lp_ft(4), Setting.surgical(1)]
    with deterministic():
        full = fl.sweep(_dropout_net, (x, y), (x, y), settings, epochs=4, batch_size=16,
                        lr=3e-2)
        halved = fl.sweep(_dropout_net, (x, y), (x, y), settings, epochs=4, batch_size=16,
                          lr=3e-2, halving=2)
    # 6 candidates, eta 2: rungs at 1/4, 1/2 and all of each budget; 3 then 1 pruned.
    assert [p.rung for p in halved.pruned] == [0, 0, 0, 1]
    pruned = {p.label for p in halved.pruned}
    assert {r.label for r in halved.rows if r.pruned_after is not None} == pruned
    for p in halved.pruned:
        row = next(r for r in halved.rows if r.label == p.label)
        assert row.pruned_after == p.after_epochs == row.epochs
        assert row.epochs < full.row(row.setting).epochs
    survivors = [r for r in halved.rows if r.pruned_after is None]
    assert len(survivors) == 2
    assert len({r.val_accuracy for r in full.rows}) > 2  # the rows tell settings apart
    for row in survivors:
        assert row.val_accuracy == full.row(row.setting).val_accuracy
        assert row.steps == full.row(row.setting).steps
    assert sum(r.epochs for r in halved.rows) <= 0.6 * sum(r.epochs for r in full.rows)


def test_rungs_inside_an_epoch_resume_exactly_where_they_stopped():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    settings = [Setting.lock(k) for k in (1, 2, 3, 4)] + [Setting.lp_ft(4), Setting.surgical(1),
                                                          Setting.surgical(2)]
    with deterministic():
        full = fl.sweep(_dropout_net, (x, y), (x, y), settings, epochs=4, batch_size=16,
                        lr=3e-2)
        halved = fl.sweep(_dropout_net, (x, y), (x, y), settings, epochs=4, batch_size=16,
                          lr=3e-2, halving=2, first_rung=1 / 8)
    # 4 batches an epoch, 16 in the budget: of 7 settings, 4 go on after 2 batches, 2 after
    # 4 and 1 after 8.
    assert sorted({p.after_epochs for p in halved.pruned if p.label != "LP-FT 4"}) == \
        [0.5, 1.0, 2.0]
    assert [p.rung for p in halved.pruned] == [0] * 3 + [1] * 2 + [2]
    (survivor,) = [r for r in halved.rows if r.pruned_after is None]
    # Stopped and suspended inside its first epoch, resumed there: exactly the full run.
    assert survivor.val_accuracy == full.row(survivor.setting).val_accuracy
    assert survivor.steps == full.row(survivor.setting).steps == 16 + \
        (8 if survivor.setting.is_lp_ft else 0)
    assert survivor.epochs == full.row(survivor.setting).epochs


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


@pytest.mark.parametrize("kind", ["loader", "iterable"])
def test_rungs_inside_an_epoch_of_a_loader_resume_exactly(kind):
    # A DataLoader draws a seed from the global generator when it starts: reading the rest of
    # an epoch after a rung must not draw again, or Dropout's masks after it all change.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    data = torch.utils.data.TensorDataset(x, y)
    train = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True) if kind == "loader" \
        else torch.utils.data.DataLoader(_Stream(x, y), batch_size=16)
    # Settings that train a Dropout layer, so every step draws random numbers.
    settings = [Setting.lock(3), Setting.lock(4), Setting.surgical(1), Setting.surgical(2)]
    # Validation loss, not accuracy (which saturates here): equal only for equal weights.
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
        return -float(nn.functional.cross_entropy(logits, labels))

    with deterministic():
        full = fl.sweep(_dropout_net, train, (x, y), settings, epochs=4, lr=3e-2, metric=loss)
        halved = fl.sweep(_dropout_net, train, (x, y), settings, epochs=4, lr=3e-2,
                          halving=2, first_rung=3 / 16, metric=loss)
    assert any(p.after_epochs % 1 for p in halved.pruned)  # stopped inside an epoch
    (survivor,) = [r for r in halved.rows if r.pruned_after is None]
    assert survivor.val_accuracy == full.row(survivor.setting).val_accuracy
    assert survivor.steps == full.row(survivor.setting).steps == 16


def test_ties_keep_what_the_screening_subset_cannot_tell_apart():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    settings = [Setting.lock(k) for k in (1, 2, 3, 4)] + [Setting.surgical(1)]
    common = dict(epochs=4, batch_size=16, lr=3e-2, halving=2, first_rung=1 / 8)
    with deterministic():
        strict = fl.sweep(_dropout_net, (x, y), (x[:12], y[:12]), settings, **common)
        # On 12 validation examples one standard error is about 0.14 at 50%: with ties of 10,
        # every setting is within reach of the last one kept, and none is pruned.
        tied = fl.sweep(_dropout_net, (x, y), (x[:12], y[:12]), settings, ties=10, **common)
        # A metric of one's own has no standard error: ties do nothing there.
        other = fl.sweep(_dropout_net, (x, y), (x[:12], y[:12]), settings, ties=10,
                         metric=lambda logits, labels: float(
                             (logits.argmax(-1) == labels).float().mean()), **common)
    assert strict.pruned and not tied.pruned
    assert all(r.finished for r in tied.rows)
    assert [p.label for p in other.pruned] == [p.label for p in strict.pruned]
    with pytest.raises(PlanError, match="ties"):
        fl.sweep(_dropout_net, (x, y), (x, y), settings, ties=-1, **common)


def test_first_rung_is_a_share_of_the_budget():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    for bad in (0, 1.5, -0.1):
        with pytest.raises(PlanError, match="first_rung"):
            fl.sweep(_dropout_net, (x, y), (x, y), epochs=1, halving=2, first_rung=bad)


def test_halving_finds_the_full_sweeps_best_on_the_demo_task():
    task = tasks()[0]
    train = (task.train[0][:160], task.train[1][:160])
    val = (task.val[0][:160], task.val[1][:160])
    make = lambda: reset_head(pretrained_digit_net(), 5)  # noqa: E731
    with deterministic():
        full = fl.sweep(make, train, val, epochs=4)
        halved = fl.sweep(make, train, val, epochs=4, halving=2)
    assert halved.best.val_accuracy >= full.best.val_accuracy - 0.01
    assert halved.pruned


def test_halving_needs_an_eta_of_two_and_no_uncached_comparison():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(PlanError, match="halving"):
        fl.sweep(_dropout_net, (x, y), (x, y), halving=1)
    with pytest.raises(PlanError, match="compare_uncached"):
        fl.sweep(_dropout_net, (x, y), (x, y), halving=2, compare_uncached=True)


def test_kept_settings_are_never_pruned():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = (x[:, 0] > 0).long()
    settings = [Setting.lock(k) for k in (1, 2, 3, 4)]
    with deterministic():
        plain = fl.sweep(_dropout_net, (x, y), (x, y), settings, epochs=4, halving=2)
        weakest = min(plain.pruned, key=lambda p: (p.rung, p.val_accuracy)).label
        kept = next(s for s in settings if s.label == weakest)
        result = fl.sweep(_dropout_net, (x, y), (x, y), settings, epochs=4, halving=2,
                          keep=[kept])
    assert weakest not in {p.label for p in result.pruned}
    assert result.row(kept).finished and result.row(kept).epochs == 4


def test_rungs_rank_on_the_screening_subset_and_the_last_rung_measures_all_of_validation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    seen: list[torch.Tensor] = []

    def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
        seen.append(labels)
        return float((logits.argmax(-1) == labels).float().mean())

    settings = [Setting.lock(k) for k in (1, 2, 3, 4)]
    with deterministic():
        halved = fl.sweep(_dropout_net, (x[:32], y[:32]), (x, y), settings, epochs=4,
                          batch_size=16, lr=3e-2, halving=2, screening=40, metric=accuracy)
    sizes = [len(labels) for labels in seen]
    # 4 candidates at rung 0 and 2 at rung 1 on 40 examples, the finalist on all 96.
    assert sizes == [40] * 6 + [96]
    first = seen[0]
    assert all(torch.equal(labels, first) for labels in seen[:6])  # one fixed subset
    for p in halved.pruned:
        assert halved.row(next(r.setting for r in halved.rows if r.label == p.label)).epochs \
            == p.after_epochs


def test_screening_must_count_examples():
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(PlanError, match="screening"):
        fl.sweep(_dropout_net, (x, y), (x, y), epochs=1, halving=2, screening=0)


def test_halving_holds_one_candidates_model_in_memory_at_a_time():
    import gc
    import weakref

    made: list[weakref.ref] = []

    def make() -> nn.Sequential:
        model = _dropout_net()
        made.append(weakref.ref(model))
        return model

    alive: list[int] = []

    def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
        gc.collect()
        alive.append(sum(ref() is not None for ref in made))
        return float((logits.argmax(-1) == labels).float().mean())

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long()
    settings = [Setting.lock(k) for k in (1, 2, 3, 4)] + [Setting.lp_ft(4), Setting.surgical(1)]
    with deterministic():
        halved = fl.sweep(make, (x, y), (x, y), settings, epochs=4, batch_size=16, lr=3e-2,
                          halving=2, metric=accuracy)
        full = fl.sweep(_dropout_net, (x, y), (x, y), settings, epochs=4, batch_size=16,
                        lr=3e-2)
    # The sweep's reference model and the candidate being measured; the others wait on disk.
    assert len(alive) == 6 + 3 + 2 and max(alive) <= 2
    for row in halved.rows:
        if row.pruned_after is None:  # suspended and resumed, yet exactly the full run
            assert row.val_accuracy == full.row(row.setting).val_accuracy
            assert row.steps == full.row(row.setting).steps
