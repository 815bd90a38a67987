"""Sweeping the frost line: train each setting on a small fixed budget and measure it.

Each setting is a plan (and optionally a linear-probe phase first, for LP-FT). Every setting
starts from ``make_model()`` under the same seed and sees the same batches, so the rows differ
only by what trains.

Feature caching. The leading groups a plan freezes entirely (parameters frozen and BatchNorm
statistics fixed) form the *frozen prefix*; the sweep runs them in eval mode, so their output
for an input never changes. With caching on, the prefix runs once per boundary (the input of
group ``b``), each boundary computed from the cached one below it and kept, and training runs
only the groups above it on the cached features, for every epoch and every setting. This
needs a model that runs as its sequence of groups: an ``nn.Sequential`` (``forward`` not
overridden) whose layer groups are runs of whole top-level children, in order. Other models
train uncached, and the result says why.

The cache skips only the forward pass of the frozen prefix: the groups that train still run
forward and backward, and settings that train the first group (full or surgical fine-tuning)
cannot use it, so the saving of a whole sweep depends on how the model's cost is spread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .._errors import FrostlineError, PlanError
from ..core.groups import Grouping, Groups
from ..core.leaves import PARAM, Leaf, TreeView
from ..core.mask import Mask
from ..core.norms import STAT_NAMES, is_batchnorm
from ..core.plan import Plan
from ..core.resolve import resolve
from ._apply import apply_mask
from ._backend import BACKEND

Data = tuple[torch.Tensor, torch.Tensor]
Progress = Callable[[str], None]
_EVAL_BATCH = 128  # larger chunks of high-resolution maps run slower on CPU


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: a plan, optionally preceded by a linear probe (LP-FT).

    Attributes:
        label: how the setting is shown ("2", "LP-FT", ...).
        plan: what trains (in the second phase, for LP-FT).
        probe_fraction: share of the epochs spent training the last group alone first.
        unlocked_groups: the number of groups the plan trains (shown on the plot's x axis).

    Example:
        >>> Setting.lock(2).plan.unlocked_groups, Setting.lp_ft(5).probe_fraction
        (2, 0.5)
    """

    label: str
    plan: Plan
    probe_fraction: float = 0.0
    unlocked_groups: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.probe_fraction < 1.0:
            raise PlanError(f"probe_fraction is the share of epochs spent on the head alone, in "
                            f"[0, 1); got {self.probe_fraction!r}.")

    @classmethod
    def lock(cls, unlocked_groups: int) -> Setting:
        """The last ``unlocked_groups`` groups train; BatchNorm statistics of the rest are fixed."""
        return cls(str(unlocked_groups), Plan.lock(unlocked_groups, freeze_bn_stats=True),
                   unlocked_groups=unlocked_groups)

    @classmethod
    def lp_ft(cls, unlocked_groups: int, probe_fraction: float = 0.5) -> Setting:
        """LP-FT: the head alone for ``probe_fraction`` of the epochs, then the last groups."""
        return cls("LP-FT", Plan.lock(unlocked_groups, freeze_bn_stats=True), probe_fraction,
                   unlocked_groups)

    @classmethod
    def surgical(cls, first_groups: int, head: bool = True) -> Setting:
        """Surgical fine-tuning: the first ``first_groups`` groups train (and the head)."""
        plan = Plan().freeze("**").unfreeze(f"group::{first_groups}")
        if head:
            plan = plan.unfreeze("group:-1:")
        label = f"first {first_groups}" + (" + head" if head else "")
        return cls(label, plan.with_bn(freeze_bn_stats=True),
                   unlocked_groups=first_groups + int(head))

    @classmethod
    def from_recommendation(cls, recommendation: Any) -> Setting:
        """The setting that trains what a :class:`~frostline.core.recommend.Recommendation` says."""
        groups = recommendation.trainable_groups
        n = recommendation.n_groups
        if recommendation.strategy == "surgical":
            head = n - 1 in groups
            return cls.surgical(len(groups) - int(head), head=head)
        if recommendation.strategy == "lp-ft":
            return cls.lp_ft(recommendation.unlocked_groups)
        return cls.lock(recommendation.unlocked_groups)


@dataclass(frozen=True)
class SweepRow:
    """What one setting measured.

    Attributes:
        label: the setting's label.
        unlocked_groups: groups the setting trains (None when the plan is not a count).
        trainable_params: trainable parameter elements (final phase).
        val_accuracy: validation accuracy after the last epoch.
        epoch_seconds: mean wall time of one training epoch.
        seconds: wall time of the whole setting (model, training, evaluation).
        cpu_seconds: CPU time of the process over the same span (all threads; unlike wall
            time, it does not grow when other programs compete for the cores).
        train_memory_mb: parameters + gradients + optimizer state + activations saved for
            backward in one training step, in MiB (measured on the tensors themselves).
        cached_groups: leading groups read from the feature cache (0: uncached).
        plan: the setting's plan, as text.
    """

    label: str
    unlocked_groups: int | None
    trainable_params: int
    val_accuracy: float
    epoch_seconds: float
    seconds: float
    cpu_seconds: float
    train_memory_mb: float
    cached_groups: int
    plan: str


@dataclass(frozen=True)
class SweepResult:
    """All rows of a sweep, how caching went, and (optionally) the uncached run beside it.

    Attributes:
        rows: one per setting, in the order given.
        group_names: the model's layer groups.
        cached: whether the feature cache was used.
        notes: what the sweep decided and why (caching support, fallbacks).
        cache_seconds: time spent computing cached features.
        seconds: wall time of the settings plus the feature cache (model building excluded).
        cpu_seconds: the same span in process CPU time.
        baseline: the same settings trained without the cache, when compared.
    """

    rows: tuple[SweepRow, ...]
    group_names: tuple[str, ...]
    cached: bool
    notes: tuple[str, ...] = ()
    cache_seconds: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    baseline: SweepResult | None = None

    @property
    def best(self) -> SweepRow:
        """The row with the highest validation accuracy (the first one on ties)."""
        return max(self.rows, key=lambda row: row.val_accuracy)

    @property
    def speedup(self) -> float | None:
        """Uncached sweep time divided by this sweep's time, when both ran."""
        if self.baseline is None or not self.seconds:
            return None
        return self.baseline.seconds / self.seconds

    @property
    def cpu_speedup(self) -> float | None:
        """The same ratio in process CPU time."""
        if self.baseline is None or not self.cpu_seconds:
            return None
        return self.baseline.cpu_seconds / self.cpu_seconds

    @property
    def cached_speedup(self) -> float | None:
        """The same ratio over only the settings that read cached features (cache time included)."""
        if self.baseline is None:
            return None
        used = {row.label for row in self.rows if row.cached_groups}
        mine = self.cache_seconds + sum(r.seconds for r in self.rows if r.label in used)
        theirs = sum(r.seconds for r in self.baseline.rows if r.label in used)
        return theirs / mine if used and mine else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "groups": list(self.group_names),
            "cached": self.cached,
            "notes": list(self.notes),
            "cache_seconds": self.cache_seconds,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "rows": [row.__dict__ for row in self.rows],
            "best": self.best.label,
        }
        if self.baseline is not None:
            out["uncached"] = self.baseline.to_dict()
            out["speedup"] = self.speedup
            out["cached_speedup"] = self.cached_speedup
            out["cpu_speedup"] = self.cpu_speedup
        return out


def sweep(make_model: Callable[[], nn.Module], train: Data, val: Data,
          settings: Sequence[Setting] | None = None, *, epochs: int = 5, batch_size: int = 32,
          lr: float = 3e-3, seed: int = 0, cache: bool = True, compare_uncached: bool = False,
          progress: Progress | None = None, grouping: Grouping | None = None) -> SweepResult:
    """Train every setting on the same small budget and measure accuracy, time and memory.

    Args:
        make_model: returns the pretrained model, with a fresh head if the task needs one.
            Called once per setting under ``torch.manual_seed(seed)``; it must return the same
            pretrained weights every time (checked for the cached groups).
        train: ``(inputs, integer labels)`` for training (no augmentation: fixed tensors).
        val: ``(inputs, integer labels)`` for validation.
        settings: what to compare; default: ``Setting.lock(k)`` for every ``k`` from 1 (the
            head alone: a linear probe) to all groups, then LP-FT over all groups.
        epochs: training epochs per setting (LP-FT splits them between its two phases).
        batch_size: training batch size.
        lr: Adam learning rate.
        seed: seeds the model head, the batch order and everything else random.
        cache: reuse the frozen prefix's outputs (see the module docstring).
        compare_uncached: also run every setting without the cache first, and keep that run as
            ``result.baseline`` (``result.speedup`` is the ratio).
        progress: called with the setting's label after every epoch.
        grouping: how to build the groups the settings refer to (:class:`~frostline.Grouping`).

    Returns:
        A :class:`SweepResult`.

    Raises:
        PlanError: a setting's plan does not fit the model, or the budget is not positive.
        FrostlineError: ``make_model`` returned different pretrained weights on two calls.

    Example:
        >>> import torch, frostline as fl
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> make = lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                                    torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> result = fl.sweep(make, (x, y), (x, y), epochs=1)
        >>> [row.label for row in result.rows]
        ['1', '2', '3', 'LP-FT']
    """
    if epochs < 1 or batch_size < 1:
        raise PlanError(f"the budget must be positive, got epochs={epochs}, "
                        f"batch_size={batch_size}.")
    torch.manual_seed(seed)
    reference = make_model()
    groups = resolve(reference, grouping=grouping).groups
    settings = list(settings) if settings is not None else default_settings(len(groups))
    starts, why = sequential_starts(reference, groups)
    modes = [False, True] if cache and compare_uncached else [cache]
    caches = {mode: _FeatureCache(reference, starts, train[0], val[0])
              for mode in modes if mode and starts}
    rows: dict[bool, list[SweepRow]] = {mode: [] for mode in modes}
    # Settings run one at a time in every mode, so a slow patch of the machine hits both.
    for setting in settings:
        for mode in modes:
            trainer = _Trainer(make_model, groups, starts, caches.get(mode), train, val,
                               epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                               progress=progress)
            rows[mode].append(trainer.run(setting))
    results = {}
    for mode in modes:
        features = caches.get(mode)
        cache_seconds = features.seconds if features is not None else 0.0
        cache_cpu = features.cpu_seconds if features is not None else 0.0
        results[mode] = SweepResult(
            rows=tuple(rows[mode]),
            group_names=tuple(groups.names),
            cached=features is not None,
            notes=(why if mode else "feature caching off: every setting runs the whole model",),
            cache_seconds=cache_seconds,
            seconds=cache_seconds + sum(row.seconds for row in rows[mode]),
            cpu_seconds=cache_cpu + sum(row.cpu_seconds for row in rows[mode]),
        )
    if len(modes) == 2:
        return replace(results[True], baseline=results[False])
    return results[modes[0]]


def default_settings(n_groups: int) -> list[Setting]:
    """``Setting.lock(k)`` for ``k`` in 1..n_groups, then LP-FT over all groups."""
    return [Setting.lock(k) for k in range(1, n_groups + 1)] + [Setting.lp_ft(n_groups)]


def sequential_starts(model: nn.Module, groups: Groups) -> tuple[list[int] | None, str]:
    """Where each group starts among ``model``'s top-level children, if it runs as a sequence.

    Returns:
        ``(starts, note)``: ``starts[b]`` is the index of the first top-level child that runs
        after groups ``0..b-1`` (parameterless children between two groups belong to the
        later one); ``starts`` is None when the model is not a supported sequence, and the note
        says why.
    """
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None, (f"feature caching off: {type(model).__name__} is not an nn.Sequential "
                      "whose top-level children are its groups; every setting runs the whole "
                      "model")
    children = list(model._modules)
    position = {name: i for i, name in enumerate(children)}
    starts, previous_end = [], -1
    for group in groups:
        tops = {name.split(".")[0] for name in group.leaf_names}
        indices = sorted(position.get(top, -1) for top in tops)
        if not indices or indices[0] <= previous_end or indices != list(
                range(indices[0], indices[-1] + 1)):
            return None, (f"feature caching off: group {group.name!r} is not a run of whole "
                          "top-level children following the previous group; every setting "
                          "runs the whole model")
        starts.append(previous_end + 1)
        previous_end = indices[-1]
    return starts, (f"feature caching on: the model runs as its {len(groups)} groups in order; "
                    "each frozen prefix runs once and its outputs are reused")


class _FeatureCache:
    """Outputs of the frozen prefix at each boundary, computed once from the nearest below."""

    def __init__(self, model: nn.Module, starts: list[int], train_x: torch.Tensor,
                 val_x: torch.Tensor) -> None:
        self.children = list(model.children())
        self.starts = starts
        self.boundaries: dict[int, tuple[torch.Tensor, torch.Tensor]] = {0: (train_x, val_x)}
        self.state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def features(self, boundary: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val) inputs of group ``boundary``.

        Every boundary passed on the way up is kept too: the sweep visits the deepest frost
        line first, and each shallower one then costs nothing, so every group of the prefix
        runs once per sweep.
        """
        if boundary not in self.boundaries:
            start, cpu = time.perf_counter(), time.process_time()
            below = max(b for b in self.boundaries if b < boundary)
            for step in range(below + 1, boundary + 1):
                stages = self.children[self.starts[step - 1]:self.starts[step]]
                self.boundaries[step] = tuple(
                    _run_eval(nn.Sequential(*stages), x) for x in self.boundaries[step - 1])
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu
        return self.boundaries[boundary]

    def check_same_weights(self, model: nn.Module, boundary: int) -> None:
        """Refuse to reuse features when ``model``'s frozen prefix differs from the cached one."""
        stages = list(model.children())[:self.starts[boundary]]
        for index, stage in enumerate(stages):
            prefix = list(model._modules)[index] + "."
            for name, tensor in stage.state_dict().items():
                if not torch.equal(tensor, self.state[prefix + name]):
                    raise FrostlineError(
                        f"make_model() returned different weights for '{prefix + name}' on two "
                        "calls, so cached features of the frozen groups would be wrong; return "
                        "the same pretrained weights each time (only a new head may vary, "
                        "seeded), or sweep with cache=False."
                    )


def _run_eval(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return torch.cat([module(chunk) for chunk in x.split(_EVAL_BATCH)])


@dataclass
class _Trainer:
    make_model: Callable[[], nn.Module]
    groups: Groups
    starts: list[int] | None
    features: _FeatureCache | None
    train: Data
    val: Data
    epochs: int
    batch_size: int
    lr: float
    seed: int
    progress: Progress | None
    epoch_times: list[float] = field(default_factory=list)
    memory: float = 0.0
    cached_groups: int = 0

    def run(self, setting: Setting) -> SweepRow:
        start, cpu = time.perf_counter(), time.process_time()
        cache_before = self._cache_clock()
        torch.manual_seed(self.seed)
        model = self.make_model()
        order = torch.Generator().manual_seed(self.seed)
        probe_epochs = round(self.epochs * setting.probe_fraction) if setting.probe_fraction else 0
        phases = [(Plan.lock(1, freeze_bn_stats=True), probe_epochs)] if probe_epochs else []
        phases.append((setting.plan, self.epochs - probe_epochs))
        for plan, epochs in phases:
            if epochs:
                self._phase(model, plan, epochs, order, setting.label)
        accuracy = self._accuracy(model, setting.plan)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # Building cached features is reported once by the sweep, not in the row that needed it.
        cache_wall, cache_cpu = (now - before for now, before in zip(self._cache_clock(),
                                                                     cache_before))
        return SweepRow(
            label=setting.label,
            unlocked_groups=setting.unlocked_groups,
            trainable_params=trainable,
            val_accuracy=accuracy,
            epoch_seconds=sum(self.epoch_times) / len(self.epoch_times),
            seconds=time.perf_counter() - start - cache_wall,
            cpu_seconds=time.process_time() - cpu - cache_cpu,
            train_memory_mb=self.memory / 2**20,
            cached_groups=self.cached_groups,
            plan=str(setting.plan),
        )

    def _cache_clock(self) -> tuple[float, float]:
        if self.features is None:
            return 0.0, 0.0
        return self.features.seconds, self.features.cpu_seconds

    def _mask(self, model: nn.Module, plan: Plan) -> Mask:
        try:
            return plan.evaluate(BACKEND.view(model), self.groups)
        except FrostlineError as exc:
            raise PlanError(f"setting {plan} does not fit the model: {exc}") from None

    def _runner(self, model: nn.Module, boundary: int) -> tuple[nn.Module, int]:
        """The module to run and how many leading groups it reads from the cache (0: none)."""
        if self.features is None or self.starts is None or boundary == 0:
            return model, 0
        self.features.check_same_weights(model, boundary)
        return nn.Sequential(*list(model.children())[self.starts[boundary]:]), boundary

    def _phase(self, model: nn.Module, plan: Plan, epochs: int, order: torch.Generator,
               label: str) -> None:
        mask = self._mask(model, plan)
        apply_mask(model, mask, plan)
        frozen = frozen_prefix(self.groups, mask, BACKEND.view(model))
        runner, boundary = self._runner(model, frozen)
        self.cached_groups = max(self.cached_groups, boundary)
        x, y = self.train
        if boundary:
            x = self.features.features(boundary)[0]
        prefix = _prefix_modules(model, self.groups, frozen)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr)
        for epoch in range(epochs):
            begin = time.perf_counter()
            model.train()
            for module in prefix:
                module.eval()
            for step, batch in enumerate(torch.randperm(len(y), generator=order)
                                         .split(self.batch_size)):
                optimizer.zero_grad(set_to_none=True)
                if epoch == 0 and step == 0:
                    self.memory = max(self.memory, _measured_step(runner, x[batch], y[batch],
                                                                  optimizer, params, model))
                else:
                    nn.functional.cross_entropy(runner(x[batch]), y[batch]).backward()
                    optimizer.step()
            self.epoch_times.append(time.perf_counter() - begin)
            if self.progress is not None:
                self.progress(label)

    def _accuracy(self, model: nn.Module, plan: Plan) -> float:
        frozen = frozen_prefix(self.groups, self._mask(model, plan), BACKEND.view(model))
        runner, boundary = self._runner(model, frozen)
        x, y = self.val
        if boundary:
            x = self.features.features(boundary)[1]
        logits = _run_eval(runner, x)
        return (logits.argmax(1) == y).float().mean().item()


def frozen_prefix(groups: Groups, mask: Mask, view: TreeView) -> int:
    """How many leading groups the mask freezes entirely (parameters and BatchNorm statistics)."""
    trainable = mask.as_dict()
    fixed_stats = set(mask.frozen_stats)
    count = 0
    for group in groups:
        for name in group.leaf_names:
            leaf = view[name]
            if leaf.kind == PARAM and trainable.get(name, True):
                return count
            if leaf.kind != PARAM and leaf.module_path not in fixed_stats and _is_stat(leaf):
                return count
        count += 1
    return count


def _is_stat(leaf: Leaf) -> bool:
    return leaf.path[-1] in STAT_NAMES and bool(leaf.owners) and is_batchnorm(leaf.owners[-1])


def _prefix_modules(model: nn.Module, groups: Groups, boundary: int) -> list[nn.Module]:
    """The modules of the first ``boundary`` groups (run in eval mode while frozen)."""
    names = dict(model.named_modules())
    return [names[path] for group in groups.groups[:boundary] for path in group.modules
            if path in names]


def _measured_step(runner: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                   model: nn.Module) -> float:
    """One training step, returning the bytes it needs: weights, grads, optimizer state, saved
    activations (each storage counted once)."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = nn.functional.cross_entropy(runner(x), y)
    weights = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
               for p in model.parameters()}
    activations = sum(n for ptr, n in saved.items() if ptr not in weights)
    loss.backward()
    optimizer.step()
    grads = sum(p.grad.nbytes for p in params if p.grad is not None)
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor))
    return float(sum(weights.values()) + grads + state + activations)


__all__ = ["Setting", "SweepResult", "SweepRow", "default_settings", "frozen_prefix",
           "sequential_starts", "sweep"]
