"""Successive halving: every candidate trains a slice of the budget, the better share goes on.

With ``eta`` = 2 and 8 epochs, candidates train 1 epoch, the better half continues to 2, the
better half of those to 4, the rest to 8 (as many rungs as the candidates and epochs allow).
LP-FT runs its whole probe first and is then judged at the same share of its fine-tuning.
Candidates resume where they stopped (their own model, optimizer, batch order and random state,
kept in a temporary file between rungs), so a candidate that reaches the last rung ends exactly
where an uninterrupted run ends: the survivors' rows equal the full sweep's rows, only pruning
can lose a setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._result import Pruned
from ._scale import gather, mine
from ._train import Run, RunSummary


@dataclass(frozen=True)
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


def run_all(runs: Sequence[Run]) -> list[tuple[RunSummary, Outcome]]:
    """Every run to the end of its budget, one after the other (the full sweep)."""
    out = []
    for run in runs:
        run.advance(run.total_epochs)
        out.append((run.summary(), Outcome(run.evaluate())))
        run.release()
    return out


def halve(make_run: Callable[[int], Run], n: int, epochs: int, eta: int, labels: Sequence[str],
          protected: frozenset[int] = frozenset()
          ) -> tuple[dict[int, tuple[RunSummary, Outcome]], list[Pruned]]:
    """Successive halving over runs ``0..n-1`` (``make_run(i)`` builds run ``i``).

    Runs whose index is in ``protected`` are never pruned (they go on beside the better share).
    Under ``torch.distributed`` each process trains its share of the runs and all agree on what
    to prune from the gathered scores.

    Returns:
        ``{i: (summary, outcome)}`` for every run, and the pruning record in order.
    """
    fractions = rung_fractions(n, epochs, eta)
    runs = {i: make_run(i) for i in range(n) if mine(i)}
    alive = list(range(n))
    outcomes: dict[int, Outcome] = {}
    stopped: dict[int, int] = {}
    pruned: list[Pruned] = []
    for rung, fraction in enumerate(fractions):
        local = {}
        for i in alive:
            if i in runs:
                run = runs[i]
                # LP-FT is judged at the same share of its fine-tuning as the others, after
                # its whole probe (a probe alone would say little about the fine-tuning to come).
                probe = run.total_epochs - run.ctx.epochs
                run.advance(probe + max(1, math.ceil(run.ctx.epochs * fraction)) - run.epoch)
                # Between rungs a fixed subset of the validation set ranks the settings;
                # the last rung measures on all of it.
                last = rung == len(fractions) - 1
                local[i] = (run.evaluate(screening=not last), run.epoch)
                # One candidate's model in memory at a time: the others wait on disk, and a
                # finalist, once measured, keeps only its measurements.
                if last:
                    run.release()
                else:
                    run.suspend()
        scores = gather(local)
        for i in alive:
            outcomes[i] = Outcome(scores[i][0])
        if rung == len(fractions) - 1:
            break
        ranked = sorted(alive, key=lambda i: _rank(outcomes[i].score), reverse=True)
        keep = max(1, math.ceil(len(alive) / eta))
        kept = set(ranked[:keep]) | (protected & set(alive))
        for i in [i for i in ranked if i not in kept]:
            outcomes[i] = Outcome(outcomes[i].score, scores[i][1], rung)
            stopped[i] = scores[i][1]
            pruned.append(Pruned(labels[i], scores[i][1], outcomes[i].score, rung))
            if i in runs:
                runs[i].release()
        alive = sorted(kept)
    summaries = gather({i: run.summary() for i, run in runs.items()})
    for run in runs.values():
        run.release()
    return {i: (summaries[i], outcomes[i]) for i in range(n)}, pruned


def _rank(score: float) -> float:
    return score if math.isfinite(score) else -math.inf
