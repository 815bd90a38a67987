"""The feature cache: run a model's frozen prefix once, then train only the groups above it.

Any architecture, one mechanism. The leading groups a setting freezes entirely (parameters
frozen, BatchNorm statistics fixed) form its *frozen prefix*; in eval mode their output for an
example never changes. A recording pass on a few examples notes the order in which modules are
called. For boundary ``b`` (the first ``b`` groups frozen) the *entry* is the first module called
that holds only groups ``b`` and above (``blocks.6`` of a ViT, ``layer3`` of a ResNet,
``encoder.layer.3`` of a BERT, child 3 of an ``nn.Sequential``). The cache stores, per example,
the arguments the entry receives (hidden states, and for Hugging Face layers the attention mask
too). When a setting trains from the cache:

* every module called before the entry that holds only frozen groups (or no parameters) is
  replaced by a stub returning a NaN placeholder of the recorded shape, so the prefix costs
  nothing (the model's own glue code between modules still runs, on placeholders: it is cheap);
* a pre-hook on the entry swaps in the cached arguments of the batch's examples.

The model's ``forward`` runs as written, so timm, torchvision, Hugging Face and plain models need
no per-family code. It cannot be right for a model whose groups above the boundary read a value
of the prefix other than the entry's arguments (a skip connection from the stem to the head):
the placeholders are NaN precisely so that such a read shows. Before trusting a boundary, the
cache recomputes the entry's arguments for a sample of examples from their inputs and compares
them with the stored ones, and compares the model's outputs with and without the cache on that
sample; a mismatch turns caching off for that boundary, with the reason in the sweep's notes.

Features are stored per example (by index), on the training device while they fit in
``memory_mb``, in a memory-mapped file beyond it. Sources whose inputs change between reads
(random augmentation) are not cached unless declared deterministic.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ..._errors import FrostlineError
from ...core.groups import Groups
from ...core.leaves import TreeView
from ._data import Source, batch_size_of, call_model, to_device

SAMPLE = 8  # examples checked per boundary, cached against recomputed
RECORD = 3  # examples of the recording pass (odd, so it rarely equals another dimension)
RTOL, ATOL = 1e-4, 1e-5


class _Stop(Exception):
    """Ends a forward pass once the deepest wanted boundary is captured."""


def _batch_dim(leaf: Any, size: int) -> bool:
    return isinstance(leaf, torch.Tensor) and leaf.ndim > 0 and leaf.shape[0] == size


@dataclass(frozen=True)
class _Template:
    """The output of a stubbed module: its structure, per-example shapes and constants."""

    spec: Any
    leaves: tuple[Any, ...]  # (shape, dtype) for per-example tensors, else the constant

    @classmethod
    def of(cls, output: Any, size: int) -> _Template:
        leaves, spec = pytree.tree_flatten(output)
        return cls(spec, tuple((tuple(t.shape[1:]), t.dtype) if _batch_dim(t, size) else t
                               for t in leaves))

    def placeholder(self, size: int, device: torch.device) -> Any:
        leaves = [torch.full((size, *leaf[0]), math.nan, dtype=leaf[1], device=device)
                  if isinstance(leaf, tuple) and leaf[1].is_floating_point else
                  torch.zeros((size, *leaf[0]), dtype=leaf[1], device=device)
                  if isinstance(leaf, tuple) else leaf for leaf in self.leaves]
        return pytree.tree_unflatten(leaves, self.spec)


@dataclass(frozen=True)
class Boundary:
    """Where the model is cut for one frozen prefix.

    Attributes:
        groups: how many leading groups are frozen.
        entry: path of the first module above the cut (it receives the cached arguments).
        stubs: paths of the modules of the prefix replaced by placeholders.
    """

    groups: int
    entry: str
    stubs: tuple[str, ...]


class Layout:
    """The order in which a model calls its modules, and where each group boundary cuts it."""

    def __init__(self, model: nn.Module, groups: Groups, view: TreeView, sample: Any) -> None:
        self.n_groups = len(groups)
        self.modules = dict(model.named_modules())
        self.leaf_group = leaf_group = {name: index for index, group in enumerate(groups)
                      for name in group.leaf_names}
        self.module_groups: dict[str, set[int]] = {path: set() for path in self.modules}
        for leaf in view:
            index = leaf_group.get(leaf.name)
            if index is None:
                continue
            parts = leaf.module_path.split(".") if leaf.module_path else []
            for depth in range(len(parts) + 1):
                self.module_groups.setdefault(".".join(parts[:depth]), set()).add(index)
        self.order: dict[str, int] = {}
        self.templates: dict[str, _Template] = {}
        size = batch_size_of(sample)
        handles = []
        for path, module in self.modules.items():
            handles.append(module.register_forward_pre_hook(self._called(path)))
            handles.append(module.register_forward_hook(self._returned(path, size)))
        try:
            with torch.no_grad():
                call_model(model.eval(), sample)
        finally:
            for handle in handles:
                handle.remove()

    def _called(self, path: str) -> Any:
        def hook(*_: Any) -> None:
            self.order.setdefault(path, len(self.order))
        return hook

    def _returned(self, path: str, size: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if path not in self.templates:
                self.templates[path] = _Template.of(output, size)
        return hook

    def boundary(self, b: int) -> Boundary | str:
        """Where boundary ``b`` cuts the model, or why it cannot be cut there."""
        if not 0 < b < self.n_groups:
            return f"nothing to cache below group {b}"
        above = [p for p in self.order if self.module_groups.get(p) and
                 min(self.module_groups[p]) >= b]
        if not above:
            return f"no module holds only groups {b} and above"
        entry = min(above, key=self.order.__getitem__)
        ancestors = {".".join(entry.split(".")[:depth]) for depth in range(entry.count(".") + 1)}
        ancestors.add("")
        before = [p for p in self.order if self.order[p] < self.order[entry]
                  and p not in ancestors]
        late = [p for p in before if self.module_groups.get(p) and max(self.module_groups[p]) >= b]
        if late:
            return (f"{late[0]!r} (a group from {b} up) runs before {entry!r}, the first module "
                    "above the boundary")
        prefix = set(before)
        stubs = tuple(p for p in before if _parent(p) not in prefix)
        return Boundary(b, entry, stubs)

    def prefix_paths(self, b: int) -> list[str]:
        """Paths of the modules of the first ``b`` groups and of those the cut at ``b`` stubs:
        they run in eval mode, cached or not, so both give the same features."""
        cut = self.boundary(b)
        paths = {p for p, found in self.module_groups.items()
                 if found and max(found) < b and p in self.modules}
        if isinstance(cut, Boundary):
            paths |= set(cut.stubs)
        return sorted(paths)


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


@dataclass
class _Store:
    """Per-example tensors of one (source, boundary): the entry's arguments, by example index."""

    spec: Any
    leaves: list[Any]  # a tensor of N rows for per-example leaves, else the constant
    per_example: list[bool]

    def take(self, index: torch.Tensor, device: torch.device | None) -> tuple[tuple, dict]:
        leaves = [to_device(leaf[index.to(leaf.device)], device) if rows else leaf
                  for leaf, rows in zip(self.leaves, self.per_example)]
        return pytree.tree_unflatten(leaves, self.spec)


@dataclass
class _State:
    index: torch.Tensor | None = None
    passed: bool = False


class CachedRunner:
    """A model with its prefix stubbed and its entry fed from the cache; remove() restores it."""

    def __init__(self, model: nn.Module, cut: Boundary, layout: Layout, store: _Store,
                 device: torch.device | None) -> None:
        self.state = _State()
        self.store, self.device = store, device
        modules = dict(model.named_modules())
        self._restore: list[nn.Module] = []
        self._handles = [model.register_forward_pre_hook(self._reset),
                         modules[cut.entry].register_forward_pre_hook(self._inject,
                                                                      with_kwargs=True)]
        for path in cut.stubs:
            module = modules[path]
            module.forward = _Stub(self.state, module.forward, layout.templates[path])
            self._restore.append(module)

    def __call__(self, model: nn.Module, index: torch.Tensor, inputs: Any) -> torch.Tensor:
        self.state.index = index
        return call_model(model, inputs)

    def _reset(self, *_: Any) -> None:
        self.state.passed = False

    def _inject(self, _module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self.state.passed:
            return None
        self.state.passed = True
        return self.store.take(self.state.index, self.device)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._restore:
            del module.forward


class _Stub:
    """A module's forward that returns a placeholder until the entry has been reached."""

    def __init__(self, state: _State, forward: Any, template: _Template) -> None:
        self.state, self.forward, self.template = state, forward, template
        self._made: dict[tuple[int, str], Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.state.passed or self.state.index is None:
            return self.forward(*args, **kwargs)
        first = next((t for t in pytree.tree_leaves((args, kwargs))
                      if isinstance(t, torch.Tensor)), None)
        device = first.device if first is not None else torch.device("cpu")
        key = (len(self.state.index), str(device))
        if key not in self._made:
            self._made[key] = self.template.placeholder(len(self.state.index), device)
        return self._made[key]


@dataclass
class FeatureCache:
    """Cached entry arguments per (source, boundary), built in one pass per source."""

    layout: Layout
    reference: nn.Module
    sources: dict[str, Source]
    device: torch.device | None = None
    memory_mb: float = 2048.0
    autocast: Any = nullcontext
    stores: dict[tuple[str, int], _Store] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    _bytes: int = 0
    _folder: str | None = None
    _state: dict[str, torch.Tensor] = field(default_factory=dict)
    cuts: dict[int, Boundary] = field(default_factory=dict)

    def prepare(self, wanted: set[int]) -> None:
        """Build and check every wanted boundary; the unusable ones get a reason."""
        start, cpu = time.perf_counter(), time.process_time()
        cuts = {}
        for b in sorted(wanted):
            cut = self.layout.boundary(b)
            if isinstance(cut, str):
                self.reasons[b] = cut
            else:
                cuts[b] = cut
        for name, src in self.sources.items():
            if not cuts:
                break
            if src.deterministic is False or src.deterministic is None and src.reads_differ():
                for b in cuts:
                    self.reasons[b] = (f"the {name} inputs change between reads (random "
                                       "augmentation?); pass deterministic=True to cache them")
                cuts = {}
                break
            for b, reason in self._build(name, src, cuts).items():
                self.reasons[b] = reason
                cuts.pop(b)
        self.cuts = cuts
        for b in list(cuts):
            reason = self.verify(b)
            if reason:
                self.reasons[b] = reason
                cuts.pop(b)
        for b in wanted - set(cuts):
            for name in self.sources:
                self.stores.pop((name, b), None)
        deepest = max(cuts, default=0)
        self._state = {name: tensor.detach().clone() for name, tensor in _tensors(self.reference)
                       if self.layout.leaf_group.get(name, self.layout.n_groups) < deepest}
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu

    def usable(self, b: int) -> bool:
        return b in self.cuts

    def _build(self, name: str, src: Source, cuts: dict[int, Boundary]) -> dict[int, str]:
        """Run the prefix over every example of ``src`` once, capturing each cut's entry."""
        deepest = max(cuts)
        failed: dict[int, str] = {}
        modules = dict(self.reference.named_modules())
        current: dict[str, torch.Tensor] = {}
        by_entry: dict[str, list[int]] = {}
        for b, cut in cuts.items():
            by_entry.setdefault(cut.entry, []).append(b)

        def capture(entry: str):
            def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
                for b in by_entry[entry]:
                    if b not in failed:
                        problem = self._store(name, b, src.n, current["index"], (args, kwargs))
                        if problem:
                            failed[b] = problem
                if deepest in by_entry[entry]:
                    raise _Stop
            return hook

        handles = [modules[entry].register_forward_pre_hook(capture(entry), with_kwargs=True)
                   for entry in by_entry]
        self.reference.eval()
        try:
            with torch.no_grad(), self.autocast():
                batches = src.in_order()
                for index, (inputs, _) in zip(batches, src.load(batches)):
                    current["index"] = index
                    try:
                        call_model(self.reference, to_device(inputs, self.device))
                    except _Stop:
                        pass
        finally:
            for handle in handles:
                handle.remove()
        return failed

    def _store(self, name: str, b: int, n: int, index: torch.Tensor, value: Any) -> str | None:
        leaves, spec = pytree.tree_flatten(value)
        size = len(index)
        store = self.stores.get((name, b))
        if store is None:
            per_example = [_batch_dim(leaf, size) for leaf in leaves]
            store = _Store(spec, [self._rows(n, leaf) if rows else leaf
                                  for leaf, rows in zip(leaves, per_example)], per_example)
            self.stores[(name, b)] = store
        if spec != store.spec:
            return "the arguments of the boundary's first module change form between batches"
        for i, (leaf, rows) in enumerate(zip(leaves, store.per_example)):
            if rows:
                if not _batch_dim(leaf, size) or leaf.shape[1:] != store.leaves[i].shape[1:]:
                    return ("the features at the boundary change shape between batches (inputs "
                            "padded per batch?); pad inputs to one length to cache them")
                store.leaves[i][index.to(store.leaves[i].device)] = leaf.to(store.leaves[i].device)
            elif not _same(leaf, store.leaves[i]):
                return "a non-batched argument of the boundary's first module changes with the batch"
        return None

    def _rows(self, n: int, leaf: torch.Tensor) -> torch.Tensor:
        shape = (n, *leaf.shape[1:])
        nbytes = math.prod(shape) * leaf.element_size()
        if self._bytes + nbytes <= self.memory_mb * 2**20:
            self._bytes += nbytes
            return torch.empty(shape, dtype=leaf.dtype, device=leaf.device)
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="frostline-cache-")
            weakref.finalize(self, _remove_folder, self._folder)
        path = os.path.join(self._folder, f"{len(os.listdir(self._folder))}.bin")
        with open(path, "wb") as handle:
            handle.truncate(nbytes)
        return torch.from_file(path, shared=True, size=math.prod(shape),
                               dtype=leaf.dtype).view(shape)

    def verify(self, b: int) -> str | None:
        """Recompute boundary ``b`` for a sample and compare; a reason when it does not match."""
        cut = self.cuts[b]
        for name, src in self.sources.items():
            sample, inputs = src.sample(SAMPLE)
            inputs = to_device(inputs, self.device)
            store = self.stores[(name, b)]
            seen: list[Any] = []
            entry = dict(self.reference.named_modules())[cut.entry]

            def grab(_m: nn.Module, args: tuple, kwargs: dict, seen: list = seen) -> None:
                if not seen:
                    seen.append((args, kwargs))

            self.reference.eval()
            handle = entry.register_forward_pre_hook(grab, with_kwargs=True)
            try:
                with torch.no_grad(), self.autocast():
                    direct = call_model(self.reference, inputs)
            finally:
                handle.remove()
            fresh = pytree.tree_leaves(seen[0])
            stored = pytree.tree_leaves(store.take(sample, self.device))
            for a, c in zip(fresh, stored):
                if isinstance(a, torch.Tensor) and not _close(a, c):
                    return (f"the cached features at group {b} differ from the recomputed ones on "
                            f"a sample of {len(sample)} {name} examples (max difference "
                            f"{(a.float() - c.float()).abs().max().item():.3g})")
            runner = CachedRunner(self.reference, cut, self.layout, store, self.device)
            try:
                with torch.no_grad(), self.autocast():
                    cached = runner(self.reference, sample, inputs)
            except Exception as exc:  # noqa: BLE001 - any failure means: do not cache here
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                return (f"the model does not run from features cached at group {b} "
                        f"({type(exc).__name__}: {first})")
            finally:
                runner.remove()
            if not _close(cached, direct):
                return (f"the model's outputs from features cached at group {b} differ from its "
                        f"outputs on the inputs: it reads more of the frozen groups than the "
                        f"inputs of {cut.entry!r} (a skip connection?)")
        return None

    def runner(self, model: nn.Module, b: int, split: str) -> CachedRunner:
        """``model`` wired to read boundary ``b`` of ``split`` from the cache."""
        self.check_same_weights(model, b)
        return CachedRunner(model, self.cuts[b], self.layout, self.stores[(split, b)],
                            self.device)

    def check_same_weights(self, model: nn.Module, b: int) -> None:
        """Refuse features when ``model``'s frozen groups (parameters or buffers) differ."""
        for name, tensor in _tensors(model):
            if self.layout.leaf_group.get(name, b) < b and name in self._state and \
                    not torch.equal(tensor.detach(), self._state[name]):
                raise FrostlineError(
                    f"make_model() returned different weights for '{name}' on two calls, so "
                    "cached features of the frozen groups would be wrong; return the same "
                    "pretrained weights (and buffers, such as BatchNorm statistics) each time "
                    "(only a new head may vary, seeded), or sweep with cache=False.")


def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b.to(a.device)))
    return a is b or a == b


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.float(), b.float().to(a.device)
    if a.shape != b.shape:
        return False
    scale = max(1.0, a.abs().max().item()) if a.numel() else 1.0
    return bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL * scale, equal_nan=False))


def _remove_folder(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

