"""Successive halving: every candidate trains a slice of the budget, the better share goes on.

The rungs are shares of each candidate's budget, counted in batches (a rung may end inside an
epoch): geometric with ratio ``eta`` from ``first`` up to the whole budget, and after each rung
the best ``1/eta`` of the candidates go on (rounded up). With ``eta`` = 4 and ``first`` = 1/16,
nine candidates train 1/16 of their budget, the best three go on to a quarter of it, and the
best of those trains to the end. LP-FT runs its whole probe first and is then judged at the same share of its
fine-tuning. Candidates resume where they stopped (their own model, optimizer, batch order and
random state, kept in a temporary file between rungs), so a candidate that reaches the last
rung ends exactly where an uninterrupted run ends: the survivors' rows equal the full sweep's
rows, only pruning can lose a setting.
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
    pruned_after: float | None = None
    rung: int | None = None


def rung_fractions(n_candidates: int, eta: int, first: float | None = None) -> list[float]:
    """The share of its budget each candidate has trained at every rung.

    ``first`` is the first rung's share; None: as many rungs as the candidates allow
    (``eta ** -s`` with ``eta ** s`` at most the number of candidates). Rungs go up by ``eta``
    while candidates are left to prune, and the last is the whole budget.

    Example:
        >>> rung_fractions(8, 2)
        [0.125, 0.25, 0.5, 1.0]
        >>> rung_fractions(9, 4, first=1 / 16)
        [0.0625, 0.25, 1.0]
    """
    if first is None:
        rungs = 0
        while eta ** (rungs + 1) <= n_candidates:
            rungs += 1
        first = float(eta) ** -rungs
    fractions, alive, share = [], n_candidates, first
    while share < 1 and alive > 1:
        fractions.append(share)
        alive, share = survivors(alive, eta), share * eta
    return [*fractions, 1.0]


def survivors(alive: int, eta: int) -> int:
    """How many of ``alive`` candidates go on after a rung: the best ``1/eta``, rounded up.

    Example:
        >>> survivors(11, 4), survivors(3, 4), survivors(6, 2)
        (3, 1, 3)
    """
    return math.ceil(alive / eta)


def halving_share(n_candidates: int, eta: int, first: float | None = None) -> float:
    """About what share of the full sweep's training successive halving runs (every
    candidate's budget counted the same).

    Example:
        >>> round(halving_share(9, 4, first=1 / 16), 3)
        0.208
    """
    alive, done, total = n_candidates, 0.0, 0.0
    for fraction in rung_fractions(n_candidates, eta, first):
        total += alive * (fraction - done)
        alive, done = survivors(alive, eta), fraction
    return total / n_candidates


def run_all(runs: Sequence[Run]) -> list[tuple[RunSummary, Outcome]]:
    """Every run to the end of its budget, one after the other (the full sweep)."""
    out = []
    for run in runs:
        run.advance(run.total_epochs)
        out.append((run.summary(), Outcome(run.evaluate())))
        run.release()
    return out


def halve(make_run: Callable[[int], Run], n: int, eta: int, labels: Sequence[str],
          protected: frozenset[int] = frozenset(), first: float | None = None,
          margin: Callable[[float], float] | None = None
          ) -> tuple[dict[int, tuple[RunSummary, Outcome]], list[Pruned]]:
    """Successive halving over runs ``0..n-1`` (``make_run(i)`` builds run ``i``); the rungs
    are :func:`rung_fractions` ``(n, eta, first)``.

    ``margin(score)``: how far below the last run kept a run's score may be and still go on
    (runs the screening cannot tell apart are not pruned); None: none.

    Runs whose index is in ``protected`` are never pruned (they go on beside the better share).
    Under ``torch.distributed`` each process trains its share of the runs and all agree on what
    to prune from the gathered scores.

    Returns:
        ``{i: (summary, outcome)}`` for every run, and the pruning record in order.
    """
    fractions = rung_fractions(n, eta, first)
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
                probe = run.batches_until(run.total_epochs - run.ctx.epochs)
                tuning = run.batches_until(run.total_epochs) - probe
                run.advance_to(probe + max(1, math.ceil(tuning * fraction)))
                # Between rungs a fixed subset of the validation set ranks the settings;
                # the last rung measures on all of it.
                last = rung == len(fractions) - 1
                local[i] = (run.evaluate(screening=not last), run.trained_epochs)
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
        keep = survivors(len(alive), eta)
        kept = set(ranked[:keep]) | (protected & set(alive))
        if margin is not None:
            last = _rank(outcomes[ranked[keep - 1]].score)
            floor = last - margin(last) if math.isfinite(last) else math.inf
            kept |= {i for i in alive if _rank(outcomes[i].score) >= floor}
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


def accuracy_margin(examples: int, errors: float) -> Callable[[float], float]:
    """``errors`` standard errors of an accuracy measured on ``examples`` examples (binomial:
    ``sqrt(p (1 - p) / examples)``), as a :func:`halve` margin.

    Example:
        >>> round(accuracy_margin(100, 1.0)(0.9), 3)
        0.03
    """
    def margin(score: float) -> float:
        p = min(max(score, 0.0), 1.0)
        return errors * math.sqrt(p * (1 - p) / examples)

    return margin


def _rank(score: float) -> float:
    return score if math.isfinite(score) else -math.inf
