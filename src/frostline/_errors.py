"""The frostline error hierarchy.

Every error frostline raises on bad input is a :class:`FrostlineError`, whose message says what
happened, what was expected and what to do next.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any

# How much of a value given by the user a message echoes: a plan file or a selector may be
# megabytes long, and its message should still be one readable line.
SHOWN = 80


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


def shorten(text: str, limit: int = SHOWN) -> str:
    """``repr(text)``, cut to about ``limit`` characters, for messages that echo user input.

    Example:
        >>> shorten("x" * 200, 10)
        "'xxxxxxxxxx'... (200 characters)"
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class _ShortRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxother = SHOWN
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 8

    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 200:  # repr would print (or refuse) thousands of digits
            return f"<an integer of {value.bit_length()} bits>"
        return repr(value)

    def repr_str(self, value: str, level: int) -> str:
        return shorten(value)


_SHORT_REPR = _ShortRepr()


def show(value: Any) -> str:
    """A short ``repr`` (about 80 characters) of any value given by the user.

    Example:
        >>> show({"rules": ["a" * 100] * 20})
        "{'rules': ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..."
        >>> show(10 ** 5000)
        '<an integer of 16610 bits>'
    """
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."
