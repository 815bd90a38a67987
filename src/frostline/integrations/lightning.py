"""Lightning: a fine-tuning callback driven by a frostline plan or unfreezing schedule.

:class:`FrostlineFinetuning` builds on Lightning's ``BaseFinetuning``: before training it applies
the schedule's plan for epoch 0 (so ``configure_optimizers`` sees only what trains, e.g. through
``fl.param_groups(self, lr=...)``); at the start of each epoch (or step, for a schedule counted
in steps) it applies the plan that holds then and adds the newly trainable parameters to every
optimizer as new parameter groups (layer-wise learning rate and weight decay as
:func:`frostline.param_groups` gives them), extends the optimizer's LR schedulers to the new
groups (which start where the schedule is: see :func:`frostline.extend_scheduler`), and lets
``BaseFinetuning`` record the groups so a resumed run restores them (and extends its schedulers
to the restored groups). Frozen BatchNorm statistics stay fixed although
the trainer calls ``train()`` every epoch.

``freeze_bn_stats`` and ``train_bn`` of the schedule are independent: ``freeze_bn_stats`` keeps
the running statistics of BatchNorms in frozen groups fixed (eval mode that survives
``train()``); ``train_bn`` keeps the affine parameters of normalisation layers in frozen groups
trainable. Both on: BN scales and shifts adapt while the statistics stay those of pretraining.

This module imports Lightning; ``import frostline`` does not import it.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from .._errors import PlanError
from ..core.groups import Grouping
from ..core.plan import Plan
from ..torch._param_groups import DEFAULT_NO_DECAY
from ..torch._unfreeze import Unfreezer, UnfreezeSchedule, extend_scheduler


class FrostlineFinetuning(BaseFinetuning):
    """Freeze and gradually thaw a LightningModule by a frostline schedule (or a fixed plan).

    Args:
        schedule: an :class:`~frostline.UnfreezeSchedule`, or a :class:`~frostline.Plan` that
            holds for the whole run.
        lr: base learning rate of the groups added as parts thaw (times their ``lr_scale``).
        weight_decay, layer_decay, no_decay, min_scale: as for :func:`frostline.param_groups`.
        module: attribute path of the network inside the LightningModule (``"backbone"``,
            ``"model.encoder"``); default: the LightningModule itself. Groups are found on this
            module, so a timm model kept in ``self.net`` keeps timm's grouping.
        grouping: how to build the groups (:class:`~frostline.Grouping`).

    Example:
        >>> import frostline as fl
        >>> from frostline.integrations.lightning import FrostlineFinetuning
        >>> callback = FrostlineFinetuning(fl.UnfreezeSchedule.gradual(every=2), lr=1e-3,
        ...                                module="net")
        >>> callback.schedule.every
        2
    """

    def __init__(self, schedule: UnfreezeSchedule | Plan, *, lr: float,
                 weight_decay: float = 0.0, layer_decay: float | None = None,
                 no_decay: Any = DEFAULT_NO_DECAY, min_scale: float = 0.0,
                 module: str | None = None, grouping: Grouping | None = None) -> None:
        super().__init__()
        if isinstance(schedule, Plan):
            schedule = UnfreezeSchedule.from_plans({0: schedule})
        if not isinstance(schedule, UnfreezeSchedule):
            raise PlanError(
                f"FrostlineFinetuning expects an UnfreezeSchedule or a Plan, got "
                f"{type(schedule).__name__}."
            )
        self.schedule = schedule
        self.module = module
        self._options = dict(lr=lr, weight_decay=weight_decay, layer_decay=layer_decay,
                             no_decay=no_decay, min_scale=min_scale, grouping=grouping)
        self.unfreezer: Unfreezer | None = None
        self._trainer: pl.Trainer | None = None

    def target(self, pl_module: pl.LightningModule) -> nn.Module:
        """The network the schedule applies to (``module`` inside ``pl_module``)."""
        if self.module is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.module)
        except AttributeError:
            raise PlanError(
                f"{type(pl_module).__name__} has no submodule '{self.module}'; pass module= as "
                "the attribute path of the network (e.g. 'backbone' or 'model.encoder')."
            ) from None

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.unfreezer = Unfreezer(self.target(pl_module), self.schedule, **self._options)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run gets its added groups back here; its schedulers must cover them too.
        super().on_fit_start(trainer, pl_module)
        for config in trainer.lr_scheduler_configs:
            extend_scheduler(config.scheduler)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        if self.schedule.unit == "epoch":
            super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self.schedule.unit != "step":
            return
        self._trainer = trainer
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            count = len(optimizer.param_groups)
            self._thaw(trainer.global_step, optimizer)
            self._store(pl_module, opt_idx, count, optimizer.param_groups)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int,
                          optimizer: Optimizer) -> None:
        self._thaw(epoch, optimizer)

    def _thaw(self, time: int, optimizer: Optimizer) -> None:
        added = self.unfreezer.step(time, optimizer)
        if added and self._trainer is not None:
            for config in self._trainer.lr_scheduler_configs:
                if config.scheduler.optimizer is optimizer:
                    extend_scheduler(config.scheduler)
