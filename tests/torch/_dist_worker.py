"""One rank of a 2-process gloo run on the CPU, started by test_distributed.py.

Usage: python _dist_worker.py OUT_DIR SCENARIO... (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
set). For each scenario, each rank writes what it saw to OUT_DIR/SCENARIO/rank{rank}.json and its
full tensors to OUT_DIR/SCENARIO/rank{rank}.{before,after}.safetensors; the test compares ranks.
All scenarios share one process group, so the processes start once.
"""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn

import frostline as fl

PLAN = fl.Plan().freeze("**").unfreeze("body | head").freeze("body.bias")
STEPS = 3


def build(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        stem=nn.Linear(8, 16), norm=nn.LayerNorm(16), act=nn.ReLU(),
        body=nn.Linear(16, 16), act2=nn.ReLU(), head=nn.Linear(16, 4),
    ))


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, param in model.named_parameters():
        value = param.full_tensor() if hasattr(param, "full_tensor") else param
        out[name.removeprefix("module.")] = value.detach().clone().contiguous()
    return out


def train(model: nn.Module, opt: torch.optim.Optimizer, rank: int) -> None:
    torch.manual_seed(100 + rank)  # every rank sees other data
    for _ in range(STEPS):
        loss = model(torch.randn(6, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def ddp(rank: int, out: str, report: dict) -> None:
    model = build(seed=rank)  # different on each rank: DDP broadcasts rank 0's weights
    fl.apply(model, PLAN)
    wrapped = nn.parallel.DistributedDataParallel(model)
    fl.check_ddp(wrapped)
    save_file(full_state(wrapped), os.path.join(out, f"rank{rank}.before.safetensors"))
    train(wrapped, torch.optim.AdamW(fl.trainable_parameters(wrapped), lr=1e-2), rank)
    save_file(full_state(wrapped), os.path.join(out, f"rank{rank}.after.safetensors"))
    report["no_grad"] = sorted(n for n, p in model.named_parameters() if p.grad is None)
    if rank == 0:
        fl.save_trainable(wrapped, os.path.join(out, "trainable.safetensors"))


def ddp_changed_after_wrap(rank: int, out: str, report: dict) -> None:
    model = build(seed=0)
    fl.apply(model, PLAN)
    wrapped = nn.parallel.DistributedDataParallel(model)
    try:
        fl.apply(wrapped, fl.Plan().freeze("**").unfreeze("head"))
    except fl.PlanError as exc:
        report["plan_error"] = str(exc)
    report["requires_grad_after_refused_plan"] = {
        n: p.requires_grad for n, p in model.named_parameters()}
    model.body.weight.requires_grad_(False)
    try:
        fl.check_ddp(wrapped)
    except fl.PlanError as exc:
        report["frozen_by_hand"] = str(exc)
    model.body.weight.requires_grad_(True)
    model.stem.weight.requires_grad_(True)
    try:
        fl.check_ddp(wrapped)
    except fl.PlanError as exc:
        report["thawed_by_hand"] = str(exc)
    # What check_ddp warns about: the thawed parameter trains on each rank apart.
    train(wrapped, torch.optim.SGD([model.stem.weight], lr=0.1), rank)
    save_file({"stem.weight": model.stem.weight.detach().clone()},
              os.path.join(out, f"rank{rank}.after.safetensors"))


def ddp_rewrap(rank: int, out: str, report: dict) -> None:
    model = build(seed=rank)
    fl.apply(model, PLAN)
    wrapped = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(fl.trainable_parameters(wrapped), lr=1e-2)
    train(wrapped, opt, rank)
    save_file(full_state(wrapped), os.path.join(out, f"rank{rank}.before.safetensors"))
    # Gradual unfreezing: thaw on the bare model, wrap again, give the optimizer the new ones.
    thawed = PLAN.unfreeze("stem")
    fl.apply(model, thawed)
    wrapped = nn.parallel.DistributedDataParallel(model)
    fl.check_ddp(wrapped)
    opt.add_param_group({"params": [model.stem.weight, model.stem.bias]})
    train(wrapped, opt, rank)
    save_file(full_state(wrapped), os.path.join(out, f"rank{rank}.after.safetensors"))


def fsdp2(rank: int, out: str, report: dict) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (2,))
    model = build(seed=0)
    fl.apply(model, PLAN)  # freeze before sharding: fully_shard keeps requires_grad per parameter
    fully_shard(model.body, mesh=mesh)
    fully_shard(model.head, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(fl.trainable_parameters(model), lr=1e-2)
    names = {id(p): n for n, p in model.named_parameters()}
    report["optimizer"] = [
        {"name": names[id(p)], "dtensor": isinstance(p, DTensor),
         "local_shape": list(p.to_local().shape), "shape": list(p.shape)}
        for group in opt.param_groups for p in group["params"]]
    save_file(full_state(model), os.path.join(out, f"rank{rank}.before.safetensors"))
    train(model, opt, rank)
    save_file(full_state(model), os.path.join(out, f"rank{rank}.after.safetensors"))
    report["optimizer_state"] = sorted(names[id(p)] for p in opt.state)
    report["no_grad"] = sorted(n for n, p in model.named_parameters() if p.grad is None)
    info = fl.save_trainable(model, os.path.join(out, "trainable.safetensors"))
    report["written"] = info.written
    dist.barrier()  # rank 0 has written the file
    try:
        fl.load_trainable(model, os.path.join(out, "trainable.safetensors"))
    except fl.CheckpointError as exc:
        report["load_sharded"] = str(exc)


def main() -> None:
    root, scenarios = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for scenario in scenarios:
        out = os.path.join(root, scenario)
        os.makedirs(out, exist_ok=True)
        report: dict = {"rank": rank}
        globals()[scenario](rank, out, report)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
            json.dump(report, handle)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
