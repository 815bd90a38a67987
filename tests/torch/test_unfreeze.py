"""Gradual unfreezing: schedules that thaw groups and grow a live optimizer."""

from __future__ import annotations

import io

import pytest
import torch
from tiny_models import tiny_resnet, tiny_vit
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

import frostline as fl


def images(seed: int = 1, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int = 1) -> None:
    optimizer.zero_grad()
    model(images(seed)).square().mean().backward()
    optimizer.step()


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def in_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def top_groups(model: nn.Module, k: int) -> set[str]:
    return {n for g in list(fl.groups(model))[-k:] for n in g.parameter_names}


def test_gradual_schedule_thaws_one_more_group_every_n_epochs():
    model = tiny_vit()
    unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.gradual(every=2, start=1), lr=1e-3)
    optimizer = torch.optim.AdamW(unfreezer.param_groups())
    n_groups = len(fl.groups(model))
    for epoch in range(2 * n_groups + 1):
        unfreezer.step(epoch, optimizer)
        expected = top_groups(model, min(1 + epoch // 2, n_groups))
        assert trainable(model) == expected
        assert sorted(in_optimizer(model, optimizer)) == sorted(expected)
        train_step(model, optimizer)


def test_parameters_are_never_added_twice():
    model = tiny_vit()
    unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.gradual(every=1), lr=1e-3)
    optimizer = torch.optim.SGD(unfreezer.param_groups(), lr=1e-3)
    assert unfreezer.step(1, optimizer)
    assert unfreezer.step(1, optimizer) == []
    unfreezer.step(2, optimizer)
    names = in_optimizer(model, optimizer)
    assert len(names) == len(set(names)) == len(top_groups(model, 3))


def test_added_groups_get_the_lr_and_decay_param_groups_would_give():
    model = tiny_vit()
    schedule = fl.UnfreezeSchedule.gradual(every=1, start=1)
    options = dict(lr=0.1, weight_decay=0.05, layer_decay=0.5)
    unfreezer = fl.Unfreezer(model, schedule, **options)
    optimizer = torch.optim.AdamW(unfreezer.param_groups())
    for epoch in range(len(fl.groups(model))):
        unfreezer.step(epoch, optimizer)
    reference = fl.param_groups(model, **options)

    def settings(groups: list[dict]) -> dict[str, tuple]:
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)]: (g["lr"], g["lr_scale"], g["weight_decay"])
                for g in groups for p in g["params"]}

    assert settings(optimizer.param_groups) == settings(reference)


def test_optimizer_state_of_already_trainable_parameters_is_kept():
    model = tiny_vit()
    unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.gradual(every=1), lr=1e-2)
    optimizer = torch.optim.AdamW(unfreezer.param_groups())
    train_step(model, optimizer)
    head = model.head.weight
    state_before = optimizer.state[head]
    exp_avg = state_before["exp_avg"].clone()
    added = unfreezer.step(1, optimizer)
    new_params = [p for g in added for p in g["params"]]
    assert optimizer.state[head] is state_before
    assert torch.equal(optimizer.state[head]["exp_avg"], exp_avg)
    assert all(p not in optimizer.state for p in new_params)
    train_step(model, optimizer)
    assert all(optimizer.state[p]["step"] == 1 for p in new_params)
    assert optimizer.state[head]["step"] == 2


def test_lambda_lr_without_extension_fails_on_added_groups():
    model = tiny_vit()
    unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.gradual(every=1), lr=0.1)
    optimizer = torch.optim.SGD(unfreezer.param_groups(), lr=0.1)
    scheduler = LambdaLR(optimizer, lambda epoch: 0.5 ** epoch)
    train_step(model, optimizer)
    scheduler.step()
    unfreezer.step(1, optimizer)
    with pytest.raises(ValueError, match="zip"):
        scheduler.step()


def test_lambda_lr_keeps_scheduling_groups_added_with_the_scheduler():
    model = tiny_vit()
    unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.gradual(every=1), lr=0.1,
                             layer_decay=0.5)
    optimizer = torch.optim.SGD(unfreezer.param_groups(), lr=0.1)
    factor = lambda epoch: 0.5 ** epoch  # noqa: E731 - a schedule is a lambda by nature
    scheduler = LambdaLR(optimizer, factor)
    for epoch in range(4):
        unfreezer.step(epoch, optimizer, scheduler)
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(0.1 * group["lr_scale"] * factor(epoch))
        train_step(model, optimizer)
        scheduler.step()
    assert len(optimizer.param_groups) == len(scheduler.base_lrs) > 2


def test_checkpoint_resume_round_trips_the_optimizer_with_added_groups():
    schedule = fl.UnfreezeSchedule.gradual(every=1, start=1)
    options = dict(lr=1e-2, weight_decay=0.05, layer_decay=0.7)

    def build() -> tuple:
        model = tiny_vit()
        unfreezer = fl.Unfreezer(model, schedule, **options)
        optimizer = torch.optim.AdamW(unfreezer.param_groups())
        return model, unfreezer, optimizer, LambdaLR(optimizer, lambda e: 0.9 ** e)

    model, unfreezer, optimizer, scheduler = build()
    for epoch in range(3):
        unfreezer.step(epoch, optimizer, scheduler)
        train_step(model, optimizer, seed=epoch)
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "unfreezer": unfreezer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    model2, unfreezer2, optimizer2, scheduler2 = build()
    model2.load_state_dict(saved["model"])
    unfreezer2.load_state_dict(saved["unfreezer"], optimizer2, scheduler2)
    optimizer2.load_state_dict(saved["optimizer"])
    scheduler2.load_state_dict(saved["scheduler"])
    assert in_optimizer(model2, optimizer2) == in_optimizer(model, optimizer)
    for epoch in range(3, 5):
        for m, u, o, s in ((model, unfreezer, optimizer, scheduler),
                           (model2, unfreezer2, optimizer2, scheduler2)):
            u.step(epoch, o, s)
            train_step(m, o, seed=epoch)
            s.step()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 model2.state_dict().values()))
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in optimizer2.param_groups]


def test_explicit_schedule_applies_each_plan_from_its_epoch():
    model = tiny_vit()
    plans = {0: fl.Plan().freeze("**").unfreeze("head.*"),
             2: fl.Plan().freeze("**").unfreeze("head.* | blocks.2.*")}
    unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.from_plans(plans), lr=1e-3)
    optimizer = torch.optim.SGD(unfreezer.param_groups(), lr=1e-3)
    seen = []
    for epoch in range(4):
        unfreezer.step(epoch, optimizer)
        seen.append(sorted({n.split(".")[0] + (n.split(".")[1] if n.startswith("blocks") else "")
                            for n in trainable(model)}))
    assert seen == [["head"], ["head"], ["blocks2", "head"], ["blocks2", "head"]]


def test_refrozen_parameters_keep_their_state_but_lose_their_gradient():
    model = tiny_vit()
    plans = {0: fl.Plan().freeze("**").unfreeze("head.* | blocks.2.*"),
             1: fl.Plan().freeze("**").unfreeze("head.*")}
    unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.from_plans(plans), lr=1e-2)
    optimizer = torch.optim.AdamW(unfreezer.param_groups(), weight_decay=0.1)
    train_step(model, optimizer)
    weight = model.blocks[2].mlp.fc1.weight
    state = optimizer.state[weight]
    unfreezer.step(1, optimizer)
    assert weight.grad is None and optimizer.state[weight] is state
    with fl.guard(model):
        train_step(model, optimizer)


@pytest.mark.parametrize("freeze_bn_stats", [True, False])
@pytest.mark.parametrize("train_bn", [True, False])
def test_train_bn_and_freeze_bn_stats_act_independently(train_bn, freeze_bn_stats):
    model = tiny_resnet()
    schedule = fl.UnfreezeSchedule.gradual(every=10, start=1, train_bn=train_bn,
                                           freeze_bn_stats=freeze_bn_stats)
    unfreezer = fl.Unfreezer(model, schedule, lr=0.1)
    optimizer = torch.optim.SGD(unfreezer.param_groups(), lr=0.1, momentum=0.9)
    model.train()
    bn = model.bn1
    before = {n: t.clone() for n, t in [*bn.named_parameters(), *bn.named_buffers()]}
    assert not model.layer1[0].conv1.weight.requires_grad
    conv_before = model.layer1[0].conv1.weight.clone()
    train_step(model, optimizer)
    assert bn.weight.requires_grad is train_bn
    assert torch.equal(bn.weight, before["weight"]) is not train_bn
    assert torch.equal(bn.bias, before["bias"]) is not train_bn
    assert torch.equal(bn.running_mean, before["running_mean"]) is freeze_bn_stats
    assert torch.equal(bn.running_var, before["running_var"]) is freeze_bn_stats
    assert torch.equal(model.layer1[0].conv1.weight, conv_before)


def test_explicit_schedule_without_a_plan_for_time_zero_is_refused():
    with pytest.raises(fl.PlanError, match=r"needs a plan for time 0 .*got times \[2\]"):
        fl.UnfreezeSchedule.from_plans({2: fl.Plan()})


def test_gradual_schedule_with_zero_interval_is_refused():
    with pytest.raises(fl.PlanError, match="every must be an int >= 1, got 0"):
        fl.UnfreezeSchedule.gradual(every=0)


def test_malformed_unfreezer_state_is_refused():
    model = tiny_vit()
    unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.gradual(), lr=1e-3)
    optimizer = torch.optim.SGD(unfreezer.param_groups(), lr=1e-3)
    with pytest.raises(fl.CheckpointError, match="not an Unfreezer state"):
        unfreezer.load_state_dict({"time": 1}, optimizer)


def optimizer_with_added_group() -> tuple[torch.optim.Optimizer, nn.Module]:
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD(first.parameters(), lr=1.0)
    return optimizer, second


def test_extend_scheduler_covers_reduce_on_plateau_and_sequential_schedulers():
    from torch.optim import lr_scheduler

    optimizer, second = optimizer_with_added_group()
    optimizer.param_groups[0]["initial_lr"] = 1.0
    plateau = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0, min_lr=0.3)
    optimizer.add_param_group({"params": second.parameters(), "lr": 1.0})
    fl.extend_scheduler(plateau)
    for loss in (1.0, 2.0, 3.0, 4.0):
        plateau.step(loss)
    assert [g["lr"] for g in optimizer.param_groups] == [0.3, 0.3]

    optimizer, second = optimizer_with_added_group()
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=2)
    decay = lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.1 ** epoch)
    sequential = lr_scheduler.SequentialLR(optimizer, [warmup, decay], milestones=[2])
    optimizer.add_param_group({"params": second.parameters(), "lr": 1.0})
    fl.extend_scheduler(sequential)
    fl.extend_scheduler(sequential)
    assert len(decay.lr_lambdas) == len(decay.base_lrs) == len(warmup.base_lrs) == 2
    for _ in range(4):
        optimizer.step()
        sequential.step()
    first, added = (g["lr"] for g in optimizer.param_groups)
    assert added == pytest.approx(first)


def test_extend_scheduler_refuses_one_cycle():
    optimizer, second = optimizer_with_added_group()
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=10)
    optimizer.add_param_group({"params": second.parameters(), "lr": 1.0})
    with pytest.raises(fl.PlanError, match="OneCycleLR keeps per-group settings"):
        fl.extend_scheduler(one_cycle)


def test_reduce_on_plateau_without_initial_rates_is_refused():
    optimizer, second = optimizer_with_added_group()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    optimizer.add_param_group({"params": second.parameters(), "lr": 1.0})
    with pytest.raises(fl.PlanError, match="groups have no 'initial_lr'"):
        fl.extend_scheduler(plateau)
    assert plateau.min_lrs == [0.0]


def test_unknown_scheduler_class_is_refused_untouched():
    class Halving(torch.optim.lr_scheduler.LRScheduler):
        def get_lr(self):
            return [group["lr"] / 2 for group in self.optimizer.param_groups]

    optimizer, second = optimizer_with_added_group()
    halving = Halving(optimizer)
    fl.extend_scheduler(halving)  # nothing to extend yet: left alone
    optimizer.add_param_group({"params": second.parameters(), "lr": 1.0})
    with pytest.raises(fl.PlanError, match="can't tell where a Halving is in its schedule"):
        fl.extend_scheduler(halving)
    assert len(halving.base_lrs) == 1 and optimizer.param_groups[1]["lr"] == 1.0


def four_linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(4, 4) for _ in range(4)])


SCHEDULERS = {
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.9 ** e),
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    "CosineAnnealingLR-eta_min": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
        o, T_max=10, eta_min=0.05),
    "SequentialLR": lambda o: torch.optim.lr_scheduler.SequentialLR(
        o, [torch.optim.lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=2),
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8)], milestones=[2]),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, factor=0.5, patience=0),
    "CosineAnnealingWarmRestarts": lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=2, eta_min=0.05),
    "ChainedScheduler": lambda o: torch.optim.lr_scheduler.ChainedScheduler(
        [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
         torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)], o),
}


def scheduled_lrs(kind: str, thaw: bool) -> list[dict[str, float]]:
    """Rates by group name over 6 epochs: thawing group 2 at epoch 3, or training it throughout."""
    model = four_linear()
    if thaw:
        unfreezer = fl.Unfreezer(model, fl.UnfreezeSchedule.gradual(every=3, start=1), lr=1.0,
                                 layer_decay=0.8)
        optimizer = torch.optim.SGD(unfreezer.param_groups(), lr=1.0)
    else:
        fl.lock(model, unlocked_groups=2)
        optimizer = torch.optim.SGD(fl.param_groups(model, lr=1.0, layer_decay=0.8), lr=1.0)
    scheduler = SCHEDULERS[kind](optimizer)
    seen = []
    for epoch in range(6):
        if thaw:
            unfreezer.step(epoch, optimizer, scheduler)
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        if kind == "ReduceLROnPlateau":
            scheduler.step(float(epoch))  # a loss that never improves: halve every epoch
        else:
            scheduler.step()
    return seen


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
def test_thawed_group_joins_the_schedule_where_it_is(kind):
    thawed, throughout = scheduled_lrs(kind, thaw=True), scheduled_lrs(kind, thaw=False)
    assert [sorted(lrs) for lrs in thawed] == [["3/no_decay"]] * 3 + [
        ["2/no_decay", "3/no_decay"]] * 3
    for epoch in range(3, 6):
        assert thawed[epoch]["2/no_decay"] == pytest.approx(throughout[epoch]["2/no_decay"],
                                                            rel=1e-12)
        assert thawed[epoch]["3/no_decay"] == pytest.approx(throughout[epoch]["3/no_decay"],
                                                            rel=1e-12)
        if "eta_min" not in kind and "WarmRestarts" not in kind:  # eta_min is added, not scaled
            ratio = thawed[epoch]["2/no_decay"] / thawed[epoch]["3/no_decay"]
            assert ratio == pytest.approx(0.8, rel=1e-12)
    assert thawed[3]["3/no_decay"] < 1.0  # the schedule had moved before the thaw


def test_scheduler_extended_with_a_partial_lambda_loads_into_one_built_before_the_thaw():
    import functools

    def build() -> tuple:
        optimizer, second = optimizer_with_added_group()
        halve = functools.partial(lambda epoch, base: base ** epoch, base=0.5)
        return optimizer, second, LambdaLR(optimizer, halve)

    optimizer, second, scheduler = build()
    optimizer.add_param_group({"params": second.parameters(), "lr": 1.0})
    fl.extend_scheduler(scheduler)
    saved = scheduler.state_dict()
    fresh_optimizer, fresh_second, fresh = build()
    fresh.load_state_dict(saved)  # groups are restored later, with the optimizer's state
    fresh_optimizer.add_param_group({"params": fresh_second.parameters(), "lr": 1.0})
    fl.extend_scheduler(fresh)
    assert len(fresh.lr_lambdas) == len(fresh.base_lrs) == 2
