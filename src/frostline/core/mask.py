"""Masks: what a plan evaluates to on one model, one trainable flag per leaf (True = trainable)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Mask:
    """One boolean per leaf, True = trainable, plus which rule decided it.

    Attributes:
        names: leaf names in view order.
        trainable: True where the leaf trains.
        decided_by: index of the last rule that matched each leaf (None: no rule, trainable by
            default; ``Mask.TRAIN_BN``: kept trainable by the plan's ``train_bn``;
            ``Mask.NOT_FLOATING``: an integer parameter, which can never train; ``Mask.KEPT``:
            outside a scoped plan, or the model's state before any plan).
        frozen_stats: paths of the BatchNorm modules whose running statistics are fixed.

    Example:
        >>> m = Mask(("a", "b"), (True, False), (None, 0))
        >>> m["b"], m.frozen_names()
        (False, ['b'])
    """

    TRAIN_BN = -1
    NOT_FLOATING = -2
    KEPT = -3

    names: tuple[str, ...]
    trainable: tuple[bool, ...]
    decided_by: tuple[int | None, ...] = ()
    frozen_stats: tuple[str, ...] = ()

    @cached_property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def __getitem__(self, name: str) -> bool:
        return self.trainable[self._index[name]]

    def __iter__(self) -> Iterator[tuple[str, bool]]:
        return iter(zip(self.names, self.trainable))

    def __len__(self) -> int:
        return len(self.names)

    def as_dict(self) -> dict[str, bool]:
        return dict(zip(self.names, self.trainable))

    def frozen_names(self) -> list[str]:
        return [n for n, t in zip(self.names, self.trainable) if not t]

    def trainable_names(self) -> list[str]:
        return [n for n, t in zip(self.names, self.trainable) if t]
