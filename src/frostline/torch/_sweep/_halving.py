"""Successive halving: every candidate trains a slice of the budget, the better share goes on.

With ``eta`` = 2 and 8 epochs, candidates train 1 epoch, the better half continues to 2, the
better half of those to 4, the rest to 8 (as many rungs as the candidates and epochs allow).
LP-FT runs its whole probe first and is then judged at the same share of its fine-tuning.
Candidates resume where they stopped (their own model, optimizer, batch order and random state),
so a candidate that reaches the last rung ends exactly where an uninterrupted run ends: the
survivors' rows equal the full sweep's rows, only pruning can lose a setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._result import Pruned
from ._train import Run


@dataclass
class Outcome:
    """A run's last validation metric and, when pruned, after how many epochs."""

    score: float
    pruned_after: int | None = None
    rung: int | None = None


def rung_fractions(n_candidates: int, epochs: int, eta: int) -> list[float]:
    """The share of its budget each candidate has trained at every rung.

    Example:
        >>> rung_fractions(8, 8, 2)
        [0.125, 0.25, 0.5, 1.0]
        >>> rung_fractions(3, 8, 2)
        [0.5, 1.0]
    """
    rungs = 0
    while eta ** (rungs + 1) <= min(n_candidates, epochs):
        rungs += 1
    return [float(eta) ** -(rungs - i) for i in range(rungs + 1)]


def run_all(runs: Sequence[Run]) -> dict[int, Outcome]:
    """Every run to the end of its budget, one after the other (the full sweep)."""
    outcomes = {}
    for i, run in enumerate(runs):
        run.advance(run.total_epochs)
        outcomes[i] = Outcome(run.evaluate())
        run.release()
    return outcomes


def halve(runs: Sequence[Run], eta: int, labels: Sequence[str],
          protected: frozenset[int] = frozenset()) -> tuple[dict[int, Outcome], list[Pruned]]:
    """Successive halving over ``runs``; returns each run's outcome and the pruning record.

    Runs whose index is in ``protected`` are never pruned (they go on beside the better share).
    """
    fractions = rung_fractions(len(runs), runs[0].ctx.epochs, eta)
    alive = list(range(len(runs)))
    outcomes: dict[int, Outcome] = {}
    pruned: list[Pruned] = []
    for rung, fraction in enumerate(fractions):
        for i in alive:
            run = runs[i]
            # LP-FT is judged at the same share of its fine-tuning as the others, after its
            # whole probe (a probe alone would say little about the fine-tuning to come).
            probe = run.total_epochs - run.ctx.epochs
            target = probe + max(1, math.ceil(run.ctx.epochs * fraction))
            run.advance(target - run.epoch)
            outcomes[i] = Outcome(run.evaluate())
        if rung == len(fractions) - 1:
            break
        ranked = sorted(alive, key=lambda i: _rank(outcomes[i].score), reverse=True)
        keep = max(1, math.ceil(len(alive) / eta))
        kept = set(ranked[:keep]) | (protected & set(alive))
        for i in [i for i in ranked if i not in kept]:
            outcomes[i] = Outcome(outcomes[i].score, runs[i].epoch, rung)
            pruned.append(Pruned(labels[i], runs[i].epoch, outcomes[i].score, rung))
            runs[i].release()
        alive = sorted(kept)
    for i in alive:
        runs[i].release()
    return outcomes, pruned


def _rank(score: float) -> float:
    return score if math.isfinite(score) else -math.inf
