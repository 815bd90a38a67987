"""DDP and FSDP2 with frozen parameters: 2 processes, gloo backend, CPU, 127.0.0.1."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import frostline as fl

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER = pathlib.Path(__file__).with_name("_dist_worker.py")
WORLD = 2
TIMEOUT_S = 240
sys.path.insert(0, str(WORKER.parent))
import _dist_worker  # noqa: E402  (the worker's model and plan, shared with the test)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SCENARIOS = ("ddp", "ddp_changed_after_wrap", "ddp_rewrap", "fsdp2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> pathlib.Path:
    """Run every scenario once in one 2-process group; tests read the ranks' outputs."""
    root = tmp_path_factory.mktemp("dist")
    outputs = _run(root)
    if any("address already in use" in text.lower() for _, text in outputs):
        outputs = _run(root)  # another process took the free port first: once more
    for returncode, text in outputs:
        assert returncode == 0, text[-4000:]
    return root


def _run(root: pathlib.Path) -> list[tuple[int, str]]:
    """Start the ranks; when one fails or time runs out, stop the others (they would wait)."""
    port = _free_port()
    procs, logs = [], []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        logs.append(root / f"rank{rank}.log")
        with open(logs[-1], "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-W", "error::DeprecationWarning:frostline", str(WORKER),
                 str(root), *SCENARIOS], env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.1)
    for p in procs:
        p.wait()
    return [(p.returncode, log.read_text(errors="replace")) for p, log in zip(procs, logs)]


def _reports(out: pathlib.Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _tensors(out: pathlib.Path, rank: int, when: str) -> dict[str, torch.Tensor]:
    return load_file(out / f"rank{rank}.{when}.safetensors")


def _trainable_names() -> set[str]:
    model = _dist_worker.build(0)
    fl.apply(model, _dist_worker.PLAN)
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _check_frozen_still_trainable_synced(out: pathlib.Path) -> None:
    trainable = _trainable_names()
    before = [_tensors(out, r, "before") for r in range(WORLD)]
    after = [_tensors(out, r, "after") for r in range(WORLD)]
    for name in before[0]:
        assert all(torch.equal(state[name], before[0][name]) for state in before + after[1:]) or (
            name in trainable), f"frozen '{name}' differs between ranks or moved"
        assert torch.equal(after[0][name], after[1][name]), f"'{name}' out of sync across ranks"
        assert torch.equal(before[0][name], after[0][name]) == (name not in trainable), name


def test_ddp_keeps_frozen_identical_and_trains_the_rest_in_sync(runs):
    out = runs / "ddp"
    _check_frozen_still_trainable_synced(out)


def test_ddp_frozen_parameters_get_no_gradient(runs):
    frozen = sorted(n for n, _ in _dist_worker.build(0).named_parameters()
                    if n not in _trainable_names())
    assert [r["no_grad"] for r in _reports(runs / "ddp")] == [frozen, frozen]


def test_ddp_rewrapped_after_thawing_trains_the_thawed_part_in_sync(runs):
    out = runs / "ddp_rewrap"
    before = [_tensors(out, r, "before") for r in range(WORLD)]
    after = [_tensors(out, r, "after") for r in range(WORLD)]
    for name in ("stem.weight", "stem.bias", "head.weight"):
        assert torch.equal(after[0][name], after[1][name]), name
        assert not torch.equal(before[0][name], after[0][name]), name
    assert torch.equal(before[0]["norm.weight"], after[1]["norm.weight"])


def test_ddp_checkpoint_from_rank0_reloads_onto_the_base(runs):
    out = runs / "ddp"
    fresh = _dist_worker.build(0)  # rank 0's weights are the ones DDP broadcast
    fl.load_trainable(fresh, out / "trainable.safetensors")
    after = _tensors(out, 0, "after")
    assert all(torch.equal(p, after[n]) for n, p in fresh.named_parameters())
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == _trainable_names()


def test_plan_changing_trainable_set_after_ddp_wrap_is_refused(runs):
    out = runs / "ddp_changed_after_wrap"
    reports = _reports(out)
    for report in reports:
        assert "already wrapped in DistributedDataParallel" in report["plan_error"]
        assert "Apply the plan to the bare model before wrapping" in report["plan_error"]
        assert {n for n, t in report["requires_grad_after_refused_plan"].items() if t} == (
            _trainable_names())


def test_check_ddp_detects_requires_grad_changed_by_hand(runs):
    out = runs / "ddp_changed_after_wrap"
    reports = _reports(out)
    for report in reports:
        assert "DDP synchronises 3 parameter tensors" in report["frozen_by_hand"]
        assert "2 (" in report["frozen_by_hand"]
        assert "4 (" in report["thawed_by_hand"]
    # Why it matters: the parameter thawed after wrapping was never synchronised.
    stems = [_tensors(out, r, "after")["stem.weight"] for r in range(WORLD)]
    assert not torch.equal(stems[0], stems[1])


def test_check_ddp_rejects_a_bare_model():
    with pytest.raises(fl.BackendError, match="expects a DistributedDataParallel model"):
        fl.check_ddp(_dist_worker.build(0))


def test_fsdp2_optimizer_holds_only_the_trainable_shards(runs):
    out = runs / "fsdp2"
    reports = _reports(out)
    trainable = _trainable_names()
    for report in reports:
        held = report["optimizer"]
        assert {entry["name"] for entry in held} == trainable
        assert all(entry["dtensor"] for entry in held)
        assert all(entry["local_shape"] == [entry["shape"][0] // WORLD, *entry["shape"][1:]]
                   for entry in held)
        assert set(report["optimizer_state"]) == trainable


def test_fsdp2_frozen_parameters_get_no_gradient(runs):
    frozen = sorted(n for n, _ in _dist_worker.build(0).named_parameters()
                    if n not in _trainable_names())
    assert [r["no_grad"] for r in _reports(runs / "fsdp2")] == [frozen, frozen]


def test_fsdp2_keeps_frozen_identical_and_trains_the_rest_in_sync(runs):
    out = runs / "fsdp2"
    _check_frozen_still_trainable_synced(out)


def test_fsdp2_checkpoint_gathers_shards_and_rank0_writes(runs):
    out = runs / "fsdp2"
    reports = _reports(out)
    assert [r["written"] for r in reports] == [True, False]
    fresh = _dist_worker.build(0)
    info = fl.load_trainable(fresh, out / "trainable.safetensors")
    assert set(info.tensors) == _trainable_names()
    after = _tensors(out, 0, "after")
    assert all(torch.equal(p, after[n]) for n, p in fresh.named_parameters())


def test_fsdp2_sharded_model_is_refused_as_a_load_target(runs):
    for report in _reports(runs / "fsdp2"):
        assert "sharded (DTensor); load the checkpoint onto the unsharded model" in (
            report["load_sharded"])
