"""Hugging Face ``transformers.Trainer``: a callback driven by a frostline plan or schedule.

:class:`FrostlineCallback` applies the plan for time 0 when the Trainer is built, builds the
Trainer's optimizer from frostline's parameter groups (only what trains; no weight decay on
biases and norms; optional layer-wise learning-rate decay), thaws more of the model on an
:class:`~frostline.UnfreezeSchedule` (in epochs or optimizer steps) by adding the thawed groups
to the Trainer's optimizer and LR scheduler where the schedule is (see
:func:`~frostline.extend_scheduler`), optionally proves every ``guard_every`` steps that no
frozen tensor moved, and writes a trainable-only checkpoint (:func:`~frostline.save_trainable`)
into every checkpoint folder the Trainer writes.

Two arguments wire it in, because a callback cannot choose the Trainer's optimizer::

    callback = FrostlineCallback(fl.UnfreezeSchedule.gradual(every=100, unit="step"),
                                 layer_decay=0.8, guard_every=50)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback],
                      optimizer_cls_and_kwargs=callback.optimizer_cls_and_kwargs())

The learning rate and weight decay come from ``TrainingArguments`` (``learning_rate`` is the
head's rate), the optimizer class from ``args.optim`` (any optimizer that takes parameter
groups: ``adamw_torch``, ``sgd``, ``adafactor`` ...).

Resuming (``trainer.train(resume_from_checkpoint=...)``): the optimizer state the Trainer saves
carries frostline's unfreezing state, so loading it thaws what had thawed and re-adds those
groups before their state is restored; the scheduler is extended to them at train begin. The
trainable-only file in the resumed checkpoint folder is then loaded with
:func:`~frostline.load_trainable`, which first proves that every frozen tensor is still the one
training started from and re-applies the plan saved with it. For a PEFT model the Trainer saves
only the adapters: that file is what restores the unfrozen layers and the head.

This module imports transformers; ``import frostline`` does not import it.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .._api import snapshot
from .._errors import CheckpointError, PlanError
from ..core.groups import Grouping
from ..core.plan import Plan
from ..core.schedule import UnfreezeSchedule
from ..torch._checkpoint import CheckpointInfo, load_trainable, save_trainable
from ..torch._guard import Snapshot
from ..torch._param_groups import DEFAULT_NO_DECAY
from ..torch._unfreeze import Unfreezer, extend_scheduler

TRAINABLE_FILE = "frostline-trainable.safetensors"
STATE_FILE = "frostline-state.json"
_STATE_KEY = "frostline"


class FrostlineCallback(TrainerCallback):
    """Freeze, thaw, guard and checkpoint a model trained by ``transformers.Trainer``.

    Args:
        plan_or_schedule: a :class:`~frostline.Plan` that holds for the whole run, or an
            :class:`~frostline.UnfreezeSchedule` (``unit="epoch"`` or ``"step"``).
        layer_decay, no_decay, min_scale: as for :func:`frostline.param_groups`; the base rate
            and weight decay are ``args.learning_rate`` and ``args.weight_decay``.
        guard_every: every this many optimizer steps (and before each thaw), check that no
            frozen tensor (parameter, or statistic of a frozen BatchNorm) moved since the last
            check and that the optimizer holds exactly the trainable parameters (unless an
            explicit schedule may freeze again), raising :class:`~frostline.GuardError` naming
            them; None: no guard.
        save_trainable: write ``frostline-trainable.safetensors`` (and ``frostline-state.json``)
            into each checkpoint folder, and load them when resuming (refusing a folder
            without them).
        grouping: how to build the groups (:class:`~frostline.Grouping`; default: the model's
            own grouping).

    Attributes:
        unfreezer: the :class:`~frostline.Unfreezer` (built with the Trainer).
        optimizer: the optimizer built for the Trainer.
        loaded: what was loaded from the trainable-only checkpoint of a resumed run, else None.

    Example:
        >>> import frostline as fl
        >>> from frostline.integrations.transformers import FrostlineCallback
        >>> callback = FrostlineCallback(fl.UnfreezeSchedule.gradual(every=2, unit="step"),
        ...                              layer_decay=0.8, guard_every=10)
        >>> [callback.schedule.plan_at(step, n_groups=8).unlocked_groups for step in (0, 2, 4)]
        [1, 2, 3]
    """

    def __init__(self, plan_or_schedule: Plan | UnfreezeSchedule, *,
                 layer_decay: float | None = None, no_decay: Any = DEFAULT_NO_DECAY,
                 min_scale: float = 0.0, guard_every: int | None = None,
                 save_trainable: bool = True, grouping: Grouping | None = None) -> None:
        if isinstance(plan_or_schedule, Plan):
            plan_or_schedule = UnfreezeSchedule.from_plans({0: plan_or_schedule}, unit="step")
        if not isinstance(plan_or_schedule, UnfreezeSchedule):
            raise PlanError(
                f"FrostlineCallback expects a Plan or an UnfreezeSchedule, got "
                f"{type(plan_or_schedule).__name__}."
            )
        if guard_every is not None and (isinstance(guard_every, bool) or not isinstance(
                guard_every, int) or guard_every < 1):
            raise PlanError(f"guard_every must be None or an int >= 1, got {guard_every!r}.")
        self.schedule = plan_or_schedule
        self.guard_every = guard_every
        self.save_trainable = save_trainable
        self._options = dict(layer_decay=layer_decay, no_decay=no_decay, min_scale=min_scale)
        self.grouping = grouping
        self.unfreezer: Unfreezer | None = None
        self.optimizer: Any = None
        self.snapshot: Snapshot | None = None
        self.loaded: CheckpointInfo | None = None
        self._args: Any = None
        self._run = uuid.uuid4().hex
        self._resumed_run: str | None = None

    def optimizer_cls_and_kwargs(self) -> tuple[Any, dict[str, Any]]:
        """The value of ``Trainer(optimizer_cls_and_kwargs=...)`` that builds frostline's optimizer."""
        return (lambda: self._build_optimizer), {}

    # --- Trainer events ------------------------------------------------------------------------

    def on_init_end(self, args: Any, state: Any, control: Any, model: nn.Module = None,
                    **kwargs: Any) -> None:
        if model is None:
            raise PlanError(
                "FrostlineCallback needs the model when the Trainer is built: pass "
                "Trainer(model=...) (model_init= builds it later, which it does not support)."
            )
        self._args = args
        self.unfreezer = Unfreezer(model, self.schedule, lr=args.learning_rate,
                                   weight_decay=args.weight_decay, **self._options,
                                   grouping=self.grouping)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        self.snapshot = None
        if self.optimizer is None or _inner(optimizer) is not self.optimizer:
            raise PlanError(
                "the Trainer's optimizer was not built by FrostlineCallback, so it may hold "
                "frozen parameters and lacks frostline's groups; pass "
                "optimizer_cls_and_kwargs=callback.optimizer_cls_and_kwargs() to Trainer (and "
                "no optimizers=)."
            )
        if lr_scheduler is not None and self.unfreezer.added:
            extend_scheduler(lr_scheduler)  # groups restored on resume
        if state.global_step:
            self._load_beside(args, state, model)
        self._thaw(self._time(state), optimizer, lr_scheduler)
        if self.guard_every is not None:
            self.snapshot = self._snapshot()

    def on_epoch_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                       lr_scheduler: Any = None, **kwargs: Any) -> None:
        if self.schedule.unit == "epoch":
            self._thaw(self._time(state), optimizer, lr_scheduler)

    def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                      lr_scheduler: Any = None, **kwargs: Any) -> None:
        if self.schedule.unit == "step":
            self._thaw(self._time(state), optimizer, lr_scheduler)

    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module = None,
                    **kwargs: Any) -> None:
        if self.snapshot is not None and state.global_step % self.guard_every == 0:
            self.snapshot.check()
            self.snapshot = self._snapshot()

    def on_save(self, args: Any, state: Any, control: Any, model: nn.Module = None,
                **kwargs: Any) -> None:
        if not self.save_trainable or not state.is_world_process_zero:
            return
        folder = _checkpoint_folder(args, state)
        os.makedirs(folder, exist_ok=True)
        save_trainable(model, os.path.join(folder, TRAINABLE_FILE), plan=self.unfreezer.plan,
                       grouping=self.grouping)
        record = {"run": self._run, "global_step": state.global_step,
                  "unfreezer": self.unfreezer.state_dict()}
        with open(os.path.join(folder, STATE_FILE), "w") as handle:
            json.dump(record, handle, indent=1)

    # --- optimizer -----------------------------------------------------------------------------

    def _build_optimizer(self, model: nn.Module, **kwargs: Any) -> Any:
        if self.unfreezer is None:
            raise PlanError(
                "FrostlineCallback builds the optimizer of the Trainer it is a callback of: pass "
                "it in Trainer(callbacks=[callback]) as well as optimizer_cls_and_kwargs."
            )
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self._args, model)
        own = {"params", "model", "optimizer_dict"} & set(optimizer_kwargs)
        if not isinstance(optimizer_cls, type) or own:
            raise PlanError(
                f"args.optim={self._args.optim!r} builds its own parameter groups, so frostline's "
                "can't be used; choose an optimizer that takes parameter groups (adamw_torch, "
                "sgd, adafactor, ...)."
            )
        names = {id(p): n for n, p in self.unfreezer.model.named_parameters()}
        groups = self.unfreezer.param_groups()
        for group in groups:
            group["param_names"] = [names[id(p)] for p in group["params"]]
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        self.optimizer.register_state_dict_post_hook(self._save_state)
        self.optimizer.register_load_state_dict_pre_hook(self._load_state)
        return self.optimizer

    def _save_state(self, optimizer: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
        state_dict[_STATE_KEY] = {"run": self._run, "unfreezer": self.unfreezer.state_dict()}
        return state_dict

    def _load_state(self, optimizer: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Thaw and re-add the saved groups, so the saved optimizer state finds its groups."""
        state_dict = dict(state_dict)
        saved = state_dict.pop(_STATE_KEY, None)
        if saved is None:
            raise CheckpointError(
                "the optimizer state being loaded was not saved by a FrostlineCallback run, so "
                "which groups had thawed is unknown; resume from a checkpoint written with the "
                "callback, or start a new run."
            )
        self._resumed_run = saved["run"]
        self.unfreezer.load_state_dict(saved["unfreezer"], optimizer)
        return state_dict

    # --- helpers -------------------------------------------------------------------------------

    def _time(self, state: Any) -> int:
        return int(state.epoch or 0) if self.schedule.unit == "epoch" else state.global_step

    def _thaw(self, time: int, optimizer: Any, scheduler: Any) -> None:
        # The guard proves the frozen set of its snapshot: check it before the plan changes,
        # then watch the new frozen set.
        changes = self.schedule.plan_at(time, len(self.unfreezer.groups)) != self.unfreezer.plan
        if changes and self.snapshot is not None:
            self.snapshot.check()
        self.unfreezer.step(time, _inner(optimizer), scheduler)
        if changes and self.snapshot is not None:
            self.snapshot = self._snapshot()

    def _snapshot(self) -> Snapshot:
        # The optimizer must hold exactly what trains, unless an explicit schedule may freeze
        # again what had thawed (the Unfreezer keeps such parameters, and their state).
        never_refreezes = self.schedule.every is not None or len(self.schedule.plans) == 1
        return snapshot(self.unfreezer.model, buffers=True, grouping=self.grouping,
                        optimizer=self.optimizer if never_refreezes else None)

    def _load_beside(self, args: Any, state: Any, model: nn.Module) -> None:
        """Load the trainable-only checkpoint of the step resumed from."""
        if not self.save_trainable:
            return
        folder = _checkpoint_folder(args, state)
        path, record = os.path.join(folder, TRAINABLE_FILE), os.path.join(folder, STATE_FILE)
        if not (os.path.isfile(path) and os.path.isfile(record)):
            raise CheckpointError(
                f"{folder} lacks {TRAINABLE_FILE} or {STATE_FILE}, which the resumed run wrote "
                "there; without them the parameters the Trainer does not save (a PEFT model's "
                "unfrozen layers and head) would restart from the base. Resume from a "
                "checkpoint inside args.output_dir, or pass save_trainable=False to trust the "
                "Trainer's own files."
            )
        with open(record) as handle:
            run = json.load(handle).get("run")
        if run != self._resumed_run:
            raise CheckpointError(
                f"{folder} holds frostline files of another run than the checkpoint resumed "
                f"from (run {run}, not {self._resumed_run}); resume from a checkpoint inside "
                "args.output_dir, or point output_dir at the run being resumed."
            )
        self.loaded = load_trainable(model, path, grouping=self.grouping)


def _inner(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer``."""
    return getattr(optimizer, "optimizer", optimizer)


def _checkpoint_folder(args: Any, state: Any) -> str:
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
