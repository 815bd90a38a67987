"""What a sweep trains on: in-memory tensors, a DataLoader, or any re-iterable of batches.

Every source is addressed by example index, so the feature cache can store the frozen prefix's
output per example and a training step can read it back for the examples of its batch:

* ``(inputs, labels)`` tensors: the sweep draws its own batches (a seeded permutation per
  epoch); ``inputs`` is a tensor, a tuple of tensors (``model(*inputs)``) or a dict of tensors
  (``model(**inputs)``), each with the examples along the first dimension.
* a ``DataLoader`` over a map-style dataset: its own sampler decides each epoch's batches (drawn
  under a seed per epoch, so every setting sees the same order); batches are loaded through the
  loader's dataset, collate function and workers.
* any other re-iterable (a list of batches, an ``IterableDataset``'s loader): its batches in its
  own order; example ``i`` is the ``i``-th example it yields.

A batch is ``(inputs, labels)``, or a dict holding ``"labels"`` (the other keys are the inputs).
Non-finite inputs are refused: training on them would only produce a diverged row.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

from ..._errors import FrostlineError

Inputs = Any  # a tensor, a tuple of tensors or a dict of tensors
Batch = tuple[Inputs, torch.Tensor]
EVAL_BATCH = 128  # larger chunks of high-resolution maps run slower on CPU


class SweepDataError(FrostlineError):
    """Training or validation data for a sweep is malformed (shape, type, non-finite values)."""


def call_model(model: torch.nn.Module, inputs: Inputs) -> torch.Tensor:
    """The model's logits for ``inputs``: ``model(**inputs)`` for a dict, ``model(*inputs)``
    for a tuple or list, ``model(inputs)`` otherwise; an output with ``.logits`` is read as
    logits (Hugging Face models).

    Example:
        >>> import torch
        >>> call_model(torch.nn.Bilinear(2, 3, 4), (torch.ones(5, 2), torch.ones(5, 3))).shape
        torch.Size([5, 4])
    """
    if isinstance(inputs, Mapping):
        out = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        out = model(*inputs)
    else:
        out = model(inputs)
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor):
        raise SweepDataError(
            f"{type(model).__name__} returned a {type(out).__name__}; the sweep needs logits: a "
            "tensor, or an output with .logits. Wrap the model so it returns the logits.")
    return logits


def split_batch(batch: Any) -> Batch:
    """``(inputs, labels)`` from a batch: a pair, or a dict with ``"labels"``."""
    if isinstance(batch, Mapping) and "labels" in batch:
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise SweepDataError(
        f"a batch must be (inputs, labels) or a dict with 'labels', got a {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        + "; make the loader yield (inputs, labels) pairs.")


def batch_size_of(inputs: Inputs) -> int:
    """How many examples ``inputs`` holds (the first dimension of its first tensor)."""
    for leaf in pytree.tree_leaves(inputs):
        if isinstance(leaf, torch.Tensor) and leaf.ndim:
            return leaf.shape[0]
    raise SweepDataError(f"found no tensor with a batch dimension in the inputs "
                         f"({type(inputs).__name__}); inputs are tensors with the examples first.")


def check_finite(inputs: Inputs, labels: torch.Tensor, where: str) -> None:
    """Refuse NaN or infinite values in floating inputs or labels."""
    for leaf in (*pytree.tree_leaves(inputs), labels):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and \
                not bool(torch.isfinite(leaf).all()):
            bad = int((~torch.isfinite(leaf)).sum())
            raise SweepDataError(
                f"the {where} data holds {bad} NaN or infinite value(s); training on them only "
                "diverges. Clean or impute them before the sweep.")


def to_device(tree: Any, device: torch.device | None) -> Any:
    if device is None:
        return tree
    return pytree.tree_map(lambda t: t.to(device, non_blocking=True)
                           if isinstance(t, torch.Tensor) else t, tree)


def take(tree: Any, index: torch.Tensor) -> Any:
    """The rows ``index`` of every tensor of ``tree``."""
    return pytree.tree_map(lambda t: t[index] if isinstance(t, torch.Tensor) else t, tree)


class Source:
    """Examples addressed by index; see the module docstring for the kinds."""

    n: int
    deterministic: bool | None  # None: cannot tell whether inputs change between epochs
    description: str

    def epoch(self, epoch: int, seed: int, batch_size: int) -> list[torch.Tensor]:
        """The example indices of each training batch of ``epoch``."""
        raise NotImplementedError

    def in_order(self, batch_size: int = EVAL_BATCH) -> list[torch.Tensor]:
        """Every example once, in index order (for evaluation and the cache)."""
        raise NotImplementedError

    def load(self, batches: Sequence[torch.Tensor]) -> Iterator[Batch]:
        """The examples of each batch of indices, in that order."""
        raise NotImplementedError

    def load_part(self, batches: Sequence[torch.Tensor], start: int,
                  stop: int) -> Iterator[Batch]:
        """The examples of ``batches[start:stop]`` of an epoch's ``batches`` (a run resuming
        inside an epoch reads the rest). Reading them draws from the global random generator
        as reading the whole epoch at once would (a ``DataLoader`` draws a seed when it starts:
        once per epoch), so a run stopped and resumed inside an epoch trains exactly as one
        that was not."""
        return self.load(batches[start:stop])

    def screening(self, size: int, batch_size: int = EVAL_BATCH) -> list[torch.Tensor]:
        """A fixed subset of at most ``size`` examples, in index order, to rank settings on
        between the rungs of successive halving (every example when the source is smaller)."""
        if self.n <= size:
            return self.in_order(batch_size)
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.n + 1))
        return list(order[:size].sort().values.split(batch_size))

    def sample(self, size: int) -> tuple[torch.Tensor, Inputs]:
        """``(indices, inputs)`` of a few examples, fixed by the source's size."""
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.n))
        index = order[:size].sort().values
        return index, next(iter(self.load([index])))[0]

    def reads_differ(self) -> bool:
        """Whether loading a sample twice gives different inputs (random augmentation)."""
        first, second = (self.sample(8)[1] for _ in range(2))
        return not all(torch.equal(a, b) for a, b in zip(pytree.tree_leaves(first),
                                                          pytree.tree_leaves(second))
                       if isinstance(a, torch.Tensor))


class TensorSource(Source):
    """``(inputs, labels)`` held in memory."""

    def __init__(self, inputs: Inputs, labels: torch.Tensor, where: str) -> None:
        if not isinstance(labels, torch.Tensor) or labels.ndim < 1:
            raise SweepDataError(f"the {where} labels must be a tensor with one entry per "
                                 f"example, got {type(labels).__name__}.")
        self.n = len(labels)
        sizes = {leaf.shape[0] if leaf.ndim else None for leaf in pytree.tree_leaves(inputs)
                 if isinstance(leaf, torch.Tensor)}
        if sizes != {self.n}:
            raise SweepDataError(f"the {where} inputs must be tensors with the {self.n} examples "
                                 f"of the labels along the first dimension; found first "
                                 f"dimensions {sorted(map(str, sizes)) or 'none'}.")
        if not self.n:
            raise SweepDataError(f"the {where} data is empty.")
        check_finite(inputs, labels, where)
        self.inputs, self.labels = inputs, labels
        self.deterministic = True
        self.description = f"{self.n} examples in memory"

    def epoch(self, epoch: int, seed: int, batch_size: int) -> list[torch.Tensor]:
        order = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        batches = list(torch.randperm(self.n, generator=order).split(batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            # A batch of one breaks BatchNorm in training mode: it joins the batch before it.
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    def in_order(self, batch_size: int = EVAL_BATCH) -> list[torch.Tensor]:
        return list(torch.arange(self.n).split(batch_size))

    def load(self, batches: Sequence[torch.Tensor]) -> Iterator[Batch]:
        for index in batches:
            yield take(self.inputs, index), self.labels[index]

    def reads_differ(self) -> bool:
        return False


class LoaderSource(Source):
    """A ``DataLoader`` over a map-style dataset."""

    def __init__(self, loader: torch.utils.data.DataLoader, where: str) -> None:
        self.loader, self.where = loader, where
        self.n = len(loader.dataset)
        self.deterministic = None
        self.description = f"a DataLoader over {self.n} examples"

    def epoch(self, epoch: int, seed: int, batch_size: int) -> list[torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + epoch)
            return [torch.as_tensor(list(b), dtype=torch.long)
                    for b in self.loader.batch_sampler]

    def in_order(self, batch_size: int = EVAL_BATCH) -> list[torch.Tensor]:
        size = self.loader.batch_size or batch_size
        return list(torch.arange(self.n).split(size))

    def screening(self, size: int, batch_size: int = EVAL_BATCH) -> list[torch.Tensor]:
        return super().screening(size, self.loader.batch_size or batch_size)

    def load(self, batches: Sequence[torch.Tensor]) -> Iterator[Batch]:
        return self._read(self._start(batches))

    def load_part(self, batches: Sequence[torch.Tensor], start: int,
                  stop: int) -> Iterator[Batch]:
        if not start:
            return self.load(batches[:stop])
        with torch.random.fork_rng(devices=[]):  # the epoch's loader drew its seed already
            return self._read(self._start(batches[start:stop]))

    def _start(self, batches: Sequence[torch.Tensor]) -> Iterator[Any]:
        """A started loader over ``batches`` (starting draws a seed from the global generator)."""
        return iter(torch.utils.data.DataLoader(
            self.loader.dataset, batch_sampler=[b.tolist() for b in batches],
            collate_fn=self.loader.collate_fn, num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory))

    def _read(self, loader: Iterator[Any]) -> Iterator[Batch]:
        for batch in loader:
            inputs, labels = split_batch(batch)
            check_finite(inputs, labels, self.where)
            yield inputs, labels


class IterableSource(Source):
    """Any re-iterable of batches, in its own order."""

    def __init__(self, batches: Iterable[Any], where: str, deterministic: bool | None) -> None:
        if iter(batches) is batches:
            raise SweepDataError(
                f"the {where} data is a one-shot iterator ({type(batches).__name__}); every "
                "setting reads it again, so pass a list of batches or a DataLoader.")
        self.batches, self.where = batches, where
        self.sizes = [batch_size_of(split_batch(b)[0]) for b in batches]
        self.n = sum(self.sizes)
        if not self.n:
            raise SweepDataError(f"the {where} data is empty.")
        # A list or tuple holds the same tensors on every read.
        self.deterministic = True if deterministic is None and isinstance(
            batches, (list, tuple)) else deterministic
        self.description = f"{len(self.sizes)} batches of {self.n} examples"
        self._positions = list(torch.arange(self.n).split(self.sizes))

    def epoch(self, epoch: int, seed: int, batch_size: int) -> list[torch.Tensor]:
        return self._positions

    def in_order(self, batch_size: int = EVAL_BATCH) -> list[torch.Tensor]:
        return self._positions

    def load(self, batches: Sequence[torch.Tensor]) -> Iterator[Batch]:
        self._check_whole(batches)
        return self._read(iter(self.batches), batches)

    def load_part(self, batches: Sequence[torch.Tensor], start: int,
                  stop: int) -> Iterator[Batch]:
        self._check_whole(batches)
        if not start:
            return itertools.islice(self.load(batches), stop)
        with torch.random.fork_rng(devices=[]):
            # The epoch's pass drew its seed already, and its first batches were read then.
            started = iter(self.batches)
            for _ in range(start):
                next(started, None)
        return self._read(started, batches[start:stop])

    def _check_whole(self, batches: Sequence[torch.Tensor]) -> None:
        if [len(b) for b in batches] != self.sizes:
            raise SweepDataError(f"the {self.where} batches of an iterable are read in its own "
                                 "order and sizes only.")

    def _read(self, started: Iterator[Any], batches: Sequence[torch.Tensor]) -> Iterator[Batch]:
        for batch, index in zip(started, batches):
            inputs, labels = split_batch(batch)
            if batch_size_of(inputs) != len(index):
                raise SweepDataError(f"the {self.where} iterable yielded other batches on a "
                                     "second pass; pass a fixed list of batches or a DataLoader.")
            check_finite(inputs, labels, self.where)
            yield inputs, labels

    def screening(self, size: int, batch_size: int = EVAL_BATCH) -> list[torch.Tensor]:
        return self._positions  # an iterable is read whole, in its own order

    def sample(self, size: int) -> tuple[torch.Tensor, Inputs]:
        return self._positions[0], split_batch(next(iter(self.batches)))[0]

    def reads_differ(self) -> bool:
        return not self.deterministic


def source(data: Any, where: str, deterministic: bool | None = None) -> Source:
    """The :class:`Source` for ``data`` (``where``: "training" or "validation", for messages)."""
    if isinstance(data, Source):
        return data
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        return TensorSource(data[0], data[1], where)
    if isinstance(data, torch.utils.data.DataLoader) and data.batch_sampler is not None and \
            hasattr(data.dataset, "__getitem__") and hasattr(data.dataset, "__len__") and \
            not isinstance(data.dataset, torch.utils.data.IterableDataset):
        out = LoaderSource(data, where)
        out.deterministic = deterministic
        return out
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping, torch.Tensor)):
        return IterableSource(data, where, deterministic)
    raise SweepDataError(f"the {where} data must be (inputs, labels) tensors, a DataLoader or a "
                         f"re-iterable of (inputs, labels) batches; got {type(data).__name__}.")


def epochs_for(source: Source, epochs: int, min_steps: int, seed: int, batch_size: int) -> int:
    """``epochs``, raised so that training takes at least ``min_steps`` optimizer steps."""
    per_epoch = len(source.epoch(0, seed, batch_size))
    return max(epochs, math.ceil(min_steps / max(per_epoch, 1)))


@dataclass(frozen=True)
class Objective:
    """What a sweep minimises and reports: the loss of a batch and the validation metric.

    Attributes:
        loss: ``loss(logits, labels) -> scalar tensor`` (default: cross-entropy).
        metric: ``metric(logits, labels) -> float`` over the whole validation set, higher is
            better (default: accuracy).
    """

    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[torch.Tensor, torch.Tensor], float]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of examples whose largest logit is the label."""
    return (logits.argmax(-1) == labels).float().mean().item()


def objective(loss: Callable | None, metric: Callable | None) -> Objective:
    return Objective(loss or torch.nn.functional.cross_entropy, metric or accuracy)
