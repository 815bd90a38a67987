"""Training one setting at one pair of learning rates, batch by batch.

A :class:`Run` owns its model, optimizer, batch order and random-number state, so runs can be
advanced in any interleaving, and stopped inside an epoch (successive halving trains a rung of
every setting, then continues the better half) and still produce, step for step, what one
uninterrupted run produces.

A run builds its model when it first trains, and a paused run can :meth:`Run.suspend`: its
weights, buffers and optimizer state go to a temporary file until it trains again, so
successive halving holds one candidate's model in memory at a time, not all of them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..._errors import FrostlineError, PlanError
from ...core.groups import Grouping, Groups
from ...core.leaves import PARAM, Leaf, TreeView
from ...core.mask import Mask
from ...core.norms import STAT_NAMES, is_batchnorm
from ...core.plan import Plan
from ...core.resolve import Resolved, resolve
from .._apply import apply_mask
from ._cache import CachedRunner, FeatureCache, Layout
from ._data import Objective, Source, call_model, to_device
from ._settings import LearningRates, Setting

Progress = Callable[[str], None]


@dataclass
class Context:
    """What every run of a sweep shares."""

    make_model: Callable[[], nn.Module]
    groups: Groups
    grouping: Grouping | None
    layout: Layout | None
    cache: FeatureCache | None
    train: Source
    val: Source
    objective: Objective
    epochs: int
    batch_size: int
    seed: int
    device: torch.device | None
    autocast: Callable[[], Any] = nullcontext
    progress: Progress | None = None
    screen: int = 512  # validation examples that rank settings between rungs


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


def resolve_plan(model: nn.Module, plan: Plan, grouping: Grouping | None) -> Resolved:
    """``fl.resolve(model, plan, grouping)`` with its mask evaluated (a plan that does not fit
    the model is a :class:`PlanError` naming the setting)."""
    resolved = resolve(model, plan, grouping)
    try:
        _ = resolved.mask  # evaluated here, so a misfit names the setting
    except FrostlineError as exc:
        raise PlanError(f"setting {plan} does not fit the model: {exc}") from None
    return resolved


@dataclass(frozen=True)
class RunSummary:
    """What a run measured, without its model (so it can travel between processes)."""

    setting: Setting
    lr: LearningRates
    epochs: float  # with the share of an epoch stopped inside
    steps: int
    diverged: bool
    memory: float
    cached_groups: int
    trainable: int
    epoch_times: tuple[float, ...]
    seconds: float
    cpu_seconds: float


class Run:
    """One setting trained at one pair of learning rates."""

    def __init__(self, ctx: Context, setting: Setting, lr: LearningRates) -> None:
        self.ctx, self.setting, self.lr = ctx, setting, lr
        self.seconds = self.cpu_seconds = 0.0
        self.model: nn.Module | None = None  # built when the run first trains
        self.rng: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        self._suspended: Any = None  # the temporary file of a suspended run
        self.schedule = [plan for plan, count in setting.phases(ctx.epochs) for _ in range(count)]
        self.epoch = 0
        self.position = 0  # batches of the current epoch already trained
        self.batches = 0  # batches trained in all (steps, and batches of one skipped)
        self._epoch_sizes: list[int] = []
        self._epoch_time = 0.0
        self.steps = 0
        self.diverged = False
        self.memory = 0.0
        self.cached_groups = 0
        self.epoch_times: list[float] = []
        self.trainable = 0
        self._plan: Plan | None = None
        self._runner: CachedRunner | None = None
        self._boundary = 0
        self._optimizer: torch.optim.Optimizer | None = None
        self._prefix: list[nn.Module] = []

    @property
    def total_epochs(self) -> int:
        return len(self.schedule)

    @property
    def done(self) -> bool:
        return self.diverged or self.epoch >= self.total_epochs

    @property
    def trained_epochs(self) -> float:
        """Epochs trained, with the share of a stopped epoch (3.5: halfway through the fourth)."""
        if self.done or not self.position:
            return float(self.epoch)
        size = self.batches_until(self.epoch + 1) - self.batches_until(self.epoch)
        return self.epoch + round(self.position / size, 3)

    def batches_until(self, epoch: int) -> int:
        """How many batches a run has trained when it reaches the start of ``epoch``."""
        while len(self._epoch_sizes) < min(epoch, self.total_epochs):
            e = len(self._epoch_sizes)
            self._epoch_sizes.append(len(self.ctx.train.epoch(e, self.ctx.seed,
                                                              self.ctx.batch_size)))
        return sum(self._epoch_sizes[:epoch])

    def _devices(self) -> list[int]:
        device = self.ctx.device
        if device is not None and device.type == "cuda":
            return [device.index or 0]
        return []

    def _rng_state(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self._devices()]

    def _set_rng_state(self) -> None:
        assert self.rng is not None
        cpu, cuda = self.rng
        torch.set_rng_state(cpu)
        for device, state in zip(self._devices(), cuda):
            torch.cuda.set_rng_state(state, device)

    def _clock(self) -> Any:
        run = self

        class Clock:
            def __enter__(self) -> None:
                self.start, self.cpu = time.perf_counter(), time.process_time()

            def __exit__(self, *exc: Any) -> None:
                run.seconds += time.perf_counter() - self.start
                run.cpu_seconds += time.process_time() - self.cpu

        return Clock()

    def _build(self) -> None:
        """The model from ``make_model`` under the run's seed (and its state, if suspended)."""
        ctx = self.ctx
        with torch.random.fork_rng(devices=self._devices()):
            torch.manual_seed(ctx.seed)
            self.model = ctx.make_model()
            if ctx.device is not None:
                self.model.to(ctx.device)
            if self.rng is None:
                self.rng = self._rng_state()
        if self._suspended is None:
            return
        self._suspended.seek(0)
        state = torch.load(self._suspended, map_location=ctx.device, weights_only=True)
        self._suspended.close()
        self._suspended = None
        self.model.load_state_dict(state["model"])
        plan, self._plan = self._plan, None
        if plan is not None:
            self._enter(plan)
            self._optimizer.load_state_dict(state["optimizer"])
            self._first_step = False

    def suspend(self) -> None:
        """Move the model's weights and buffers and the optimizer's state to a temporary file
        and drop them from memory; the next :meth:`advance` restores them exactly."""
        if self.model is None or self.done:
            return
        with self._clock():
            file = tempfile.TemporaryFile()
            torch.save({"model": self.model.state_dict(),
                        "optimizer": self._optimizer.state_dict() if self._optimizer else {}},
                       file)
            self._drop()
            self._suspended = file

    def advance(self, epochs: int) -> None:
        """Train up to ``epochs`` more epochs (fewer when the budget ends or the loss diverges);
        a run stopped inside an epoch first finishes it, which counts as one."""
        self.advance_to(self.batches_until(self.epoch + epochs))

    def advance_to(self, batches: int) -> None:
        """Train until ``batches`` batches in all are done (or the budget ends, or the loss
        diverges); the run may stop inside an epoch and resume there exactly."""
        with self._clock():
            if self.model is None and not self.done:
                self._build()
        with self._clock(), torch.random.fork_rng(devices=self._devices()):
            self._set_rng_state()
            while not self.done and self.batches < batches:
                plan = self.schedule[self.epoch]
                if plan is not self._plan:
                    self._enter(plan)
                self._train_batches(batches - self.batches)
            self.rng = self._rng_state()

    def _enter(self, plan: Plan) -> None:
        """Start a phase: apply the plan, cut the model at its frozen prefix, new optimizer."""
        ctx = self.ctx
        if self._runner is not None:
            self._runner.remove()
            self._runner = None
        resolved = resolve_plan(self.model, plan, ctx.grouping)
        self.model = resolved.model
        apply_mask(resolved.model, resolved.mask, plan)
        self._boundary = frozen_prefix(resolved.groups, resolved.mask, resolved.view)
        if ctx.cache is not None and ctx.cache.usable(self._boundary):
            self._runner = ctx.cache.runner(self.model, self._boundary, "train")
            self.cached_groups = max(self.cached_groups, self._boundary)
        names = dict(self.model.named_modules())
        paths = ctx.layout.prefix_paths(self._boundary) if ctx.layout is not None else \
            [p for g in ctx.groups.groups[:self._boundary] for p in g.modules]
        self._prefix = [names[p] for p in paths if p in names]
        head = set(ctx.groups.groups[-1].leaf_names)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for _, p in named)
        param_groups = [{"params": [p for n, p in named if n in head], "lr": self.lr.head},
                        {"params": [p for n, p in named if n not in head], "lr": self.lr.body}]
        param_groups = [g for g in param_groups if g["params"]]
        if not param_groups:
            raise PlanError(f"setting {self.setting.label!r} ({plan}) leaves nothing trainable.")
        self._optimizer = torch.optim.Adam(param_groups)
        self._plan = plan
        self._first_step = True

    def _forward(self, index: torch.Tensor, inputs: Any) -> torch.Tensor:
        inputs = to_device(inputs, self.ctx.device)
        if self._runner is not None:
            return self._runner(self.model, index, inputs)
        return call_model(self.model, inputs)

    def _train_batches(self, most: int) -> None:
        """Train at most ``most`` batches of the current epoch, from where it stopped."""
        ctx = self.ctx
        begin = time.perf_counter()
        self.model.train()
        for module in self._prefix:
            module.eval()
        batches = ctx.train.epoch(self.epoch, ctx.seed, ctx.batch_size)
        start = self.position
        stop = min(len(batches), start + most)
        for index, (inputs, labels) in zip(batches[start:stop],
                                           ctx.train.load_part(batches, start, stop)):
            self.position += 1
            self.batches += 1
            if len(index) == 1 and _batchnorm_training(self.model):
                continue  # BatchNorm cannot normalise one example in training mode
            labels = to_device(labels, ctx.device)
            self._optimizer.zero_grad(set_to_none=True)
            with ctx.autocast():
                if self._first_step:
                    loss, memory = _measured_loss(self, index, inputs, labels)
                else:
                    loss = ctx.objective.loss(self._forward(index, inputs), labels)
            if not bool(torch.isfinite(loss.detach())):
                self.diverged = True
                break
            loss.backward()
            if self._first_step:
                self.memory = max(self.memory, memory + _optimizer_bytes(self))
                self._first_step = False
            self._optimizer.step()
            self.steps += 1
        self._epoch_time += time.perf_counter() - begin
        if self.position >= len(batches) or self.diverged:
            self.epoch_times.append(self._epoch_time)
            self._epoch_time = 0.0
            self.epoch += 1
            self.position = 0
            if self.ctx.progress is not None:
                self.ctx.progress(self.setting.label)

    def evaluate(self, screening: bool = False) -> float:
        """The validation metric now (NaN once diverged); ``screening``: on the fixed subset
        of the validation set that ranks settings between rungs (``Context.screen``)."""
        if self.diverged:
            return float("nan")
        with self._clock():
            ctx = self.ctx
            runner = self._runner
            if runner is not None:
                runner.store = ctx.cache.stores[("val", self._boundary)]
            self.model.eval()
            outputs, labels = [], []
            try:
                with torch.no_grad(), ctx.autocast():
                    batches = ctx.val.screening(ctx.screen) if screening else \
                        ctx.val.in_order()
                    for index, (inputs, y) in zip(batches, ctx.val.load(batches)):
                        inputs = to_device(inputs, ctx.device)
                        logits = runner(self.model, index, inputs) if runner else \
                            call_model(self.model, inputs)
                        outputs.append(logits.float().cpu())
                        labels.append(y.cpu())
            finally:
                if runner is not None:
                    runner.store = ctx.cache.stores[("train", self._boundary)]
            value = float(ctx.objective.metric(torch.cat(outputs), torch.cat(labels)))
        return value

    def summary(self) -> RunSummary:
        return RunSummary(self.setting, self.lr, self.trained_epochs, self.steps, self.diverged,
                          self.memory, self.cached_groups, self.trainable,
                          tuple(self.epoch_times), self.seconds, self.cpu_seconds)

    def release(self) -> None:
        """Drop the model and optimizer (the measurements stay)."""
        if self._suspended is not None:
            self._suspended.close()
            self._suspended = None
        self._drop()

    def _drop(self) -> None:
        """Unhook the feature cache and let go of the model and optimizer."""
        if self._runner is not None:
            self._runner.remove()
        self.model = None
        self._optimizer = None
        self._runner = None


def _batchnorm_training(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
               for m in model.modules())


def _measured_loss(run: Run, index: torch.Tensor, inputs: Any,
                   labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The loss of one step, and the bytes of weights and activations saved for backward."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = run.ctx.objective.loss(run._forward(index, inputs), labels)
    weights = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
               for p in run.model.parameters()}
    activations = sum(n for ptr, n in saved.items() if ptr not in weights)
    return loss, float(sum(weights.values()) + activations)


def _optimizer_bytes(run: Run) -> float:
    """Gradients and optimizer state of the trainable parameters (Adam: two moments)."""
    params = [p for p in run.model.parameters() if p.requires_grad]
    grads = sum(p.grad.nbytes for p in params if p.grad is not None)
    return float(grads + 2 * sum(p.nbytes for p in params))
