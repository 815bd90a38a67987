"""The frostline error hierarchy.

Every error frostline raises on bad input is a :class:`FrostlineError`, whose message says what
happened, what was expected and what to do next.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FrostlineError(Exception):
    """Base class of every error frostline raises for bad input or a broken promise."""


class SelectorError(FrostlineError):
    """A selector is malformed, or matches nothing where something was required."""


class SelectorSyntaxError(SelectorError):
    """A selector string could not be parsed."""


class PlanError(FrostlineError):
    """A plan is malformed or cannot be applied to this model."""


class GroupError(FrostlineError):
    """Layer groups could not be built, or an index is out of range."""


class TiedWeightError(PlanError):
    """A plan gives two paths of the same (shared) tensor different states."""


class GuardError(FrostlineError):
    """A frozen tensor moved (or a trainable one did not, when that was required)."""


class CheckpointError(FrostlineError):
    """A checkpoint does not fit the model it is loaded onto, or is malformed."""


class BackendError(FrostlineError):
    """No backend knows this kind of model, or the backend cannot do what was asked."""


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates closest to ``word`` (for "did you mean" hints).

    Example:
        >>> closest("layr4", ["layer1", "layer4", "fc"])
        ['layer4', 'layer1']
    """
    pool = sorted(set(candidates))
    found = difflib.get_close_matches(word, pool, n=n, cutoff=0.5)
    if not found:
        lowered = word.lower()
        # Containment only for candidates of 3+ characters: "A" is "in" almost any word.
        found = [c for c in pool
                 if len(c) >= 3 and (lowered in c.lower() or c.lower() in lowered)][:n]
    return found
