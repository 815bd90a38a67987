"""FrostlineFinetuning: gradual unfreezing inside a real Lightning Trainer.fit on the CPU."""

from __future__ import annotations

import pytest

pl = pytest.importorskip("lightning.pytorch")

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.optim.lr_scheduler import LambdaLR  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import frostline as fl  # noqa: E402
from frostline.integrations.lightning import FrostlineFinetuning  # noqa: E402


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
        self.seen: list[dict] = []
        self.every_batch: list[dict] = []

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        x, y = batch
        state = {
            "trainable": {n for n, p in self.net.named_parameters() if p.requires_grad},
            "stem_bn_training": self.net.bn1.training,
            "groups": len(self.trainer.optimizers[0].param_groups),
        }
        self.every_batch.append(state)
        if batch_idx == 0:
            self.seen.append(state)
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.SGD(fl.param_groups(self.net, lr=0.05), lr=0.05, momentum=0.9)
        return {"optimizer": optimizer, "lr_scheduler": LambdaLR(optimizer, lambda e: 0.9 ** e)}


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 32, 32, generator=generator),
                         torch.randint(0, 3, (8,), generator=generator))
    return DataLoader(data, batch_size=4)


def fit(module: pl.LightningModule, callback: FrostlineFinetuning, epochs: int, root) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root),
                         callbacks=[callback])
    trainer.fit(module, loader())
    return trainer


def top_groups(model: nn.Module, k: int) -> set[str]:
    return {n for g in list(fl.groups(model))[-k:] for n in g.parameter_names}


@pytest.mark.slow
def test_groups_thaw_at_scheduled_epochs_and_frozen_bn_stays_fixed(tmp_path):
    module = Classifier()
    stem_stats = module.net.bn1.running_mean.clone()
    layer4_stats = module.net.layer4[0].bn1.running_mean.clone()
    callback = FrostlineFinetuning(fl.UnfreezeSchedule.gradual(every=2, start=1), lr=0.05,
                                   module="net")
    trainer = fit(module, callback, epochs=4, root=tmp_path)
    assert [s["trainable"] for s in module.seen] == [
        top_groups(module.net, k) for k in (1, 1, 2, 2)]
    assert [s["groups"] for s in module.seen] == [1, 1, 2, 2]
    assert not any(s["stem_bn_training"] for s in module.seen)
    assert torch.equal(module.net.bn1.running_mean, stem_stats)
    assert not torch.equal(module.net.layer4[0].bn1.running_mean, layer4_stats)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert len(scheduler.base_lrs) == len(trainer.optimizers[0].param_groups) == 2


@pytest.mark.slow
def test_schedule_counted_in_steps_thaws_between_batches(tmp_path):
    module = Classifier()
    schedule = fl.UnfreezeSchedule.gradual(every=3, start=1, unit="step")
    trainer = fit(module, FrostlineFinetuning(schedule, lr=0.05, module="net"), epochs=2,
                  root=tmp_path)
    assert [s["groups"] for s in module.every_batch] == [1, 1, 1, 2]
    assert module.every_batch[-1]["trainable"] == top_groups(module.net, 2)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert len(scheduler.base_lrs) == len(scheduler.lr_lambdas) == 2


@pytest.mark.slow
def test_fixed_plan_keeps_frozen_tensors_and_statistics_through_fit(tmp_path):
    module = Classifier()
    plan = fl.Plan.lock(2, freeze_bn_stats=True)
    callback = FrostlineFinetuning(plan, lr=0.05, module="net")
    snap_holder = {}

    class Watch(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            snap_holder["snap"] = fl.snapshot(pl_module.net, buffers=True)

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[callback, Watch()])
    trainer.fit(module, loader())
    snap = snap_holder["snap"]
    assert set(snap.trainable) == top_groups(module.net, 2)
    snap.check(require_trainable_moved=True)


class CosineClassifier(Classifier):
    """Records the rate of every param group at the first batch of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[dict[str, float]] = []

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        if batch_idx == 0:
            self.rates.append({g["name"]: g["lr"]
                               for g in self.trainer.optimizers[0].param_groups})
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.SGD(fl.param_groups(self.net, lr=0.05, layer_decay=0.8),
                                    lr=0.05)
        return {"optimizer": optimizer,
                "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)}


@pytest.mark.slow
def test_group_thawed_under_cosine_keeps_the_layer_decay_ratio(tmp_path):
    module = CosineClassifier()
    callback = FrostlineFinetuning(fl.UnfreezeSchedule.gradual(every=2, start=1), lr=0.05,
                                   layer_decay=0.8, module="net")
    fit(module, callback, epochs=4, root=tmp_path)
    head, below = fl.groups(module.net).names[-1], fl.groups(module.net).names[-2]
    assert [len(r) for r in module.rates] == [1, 1, 2, 2]
    assert module.rates[2][f"{head}/no_decay"] < 0.05  # annealed before the thaw
    for rates in module.rates[2:]:
        assert rates[f"{below}/no_decay"] / rates[f"{head}/no_decay"] == pytest.approx(0.8)


def test_unknown_submodule_is_reported():
    callback = FrostlineFinetuning(fl.Plan.lock(1), lr=0.1, module="backbone")
    with pytest.raises(fl.PlanError, match="has no submodule 'backbone'"):
        callback.freeze_before_training(Classifier())


def test_schedule_of_wrong_type_is_refused():
    with pytest.raises(fl.PlanError, match="expects an UnfreezeSchedule or a Plan, got dict"):
        FrostlineFinetuning({0: fl.Plan()}, lr=0.1)


@pytest.mark.slow
def test_resumed_fit_restores_the_added_groups_and_keeps_thawing(tmp_path):
    schedule = fl.UnfreezeSchedule.gradual(every=1, start=1)
    first = Classifier()
    trainer = fit(first, FrostlineFinetuning(schedule, lr=0.05, module="net"), epochs=2,
                  root=tmp_path)
    path = tmp_path / "two_epochs.ckpt"
    trainer.save_checkpoint(path)
    saved_groups = [len(g["params"]) for g in trainer.optimizers[0].param_groups]

    resumed = Classifier()
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[FrostlineFinetuning(schedule, lr=0.05, module="net")])
    trainer.fit(resumed, loader(), ckpt_path=str(path))
    assert [s["groups"] for s in resumed.seen] == [3, 4]
    assert [len(g["params"]) for g in trainer.optimizers[0].param_groups][:2] == saved_groups
    assert [s["trainable"] for s in resumed.seen] == [
        top_groups(resumed.net, k) for k in (3, 4)]
    names = {id(p): n for n, p in resumed.net.named_parameters()}
    in_optimizer = [names[id(p)] for g in trainer.optimizers[0].param_groups for p in g["params"]]
    assert sorted(in_optimizer) == sorted(top_groups(resumed.net, 4))
