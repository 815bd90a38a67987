"""A sweep spread over the ranks of a torch.distributed job: 2 gloo processes on the CPU."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER = pathlib.Path(__file__).with_name("_sweep_dist_worker.py")
WORLD = 2
sys.path.insert(0, str(WORKER.parent))
import _sweep_dist_worker  # noqa: E402  (the worker's model, data and settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ranks(root: pathlib.Path) -> list[subprocess.CompletedProcess]:
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(root)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        outputs.append((proc.returncode, out.decode(errors="replace")))
    return outputs


def test_every_rank_returns_the_rows_one_process_computes(tmp_path):
    outputs = _ranks(tmp_path)
    for code, text in outputs:
        assert code == 0, text[-3000:]
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        alone = json.loads(json.dumps(_sweep_dist_worker.sweeps()))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    # Each rank built the reference model and its share of the 5 settings' models only.
    assert [r.pop("models_built_by_the_full_sweep") for r in ranks] == [1 + 3, 1 + 2]
    assert alone.pop("models_built_by_the_full_sweep") == 1 + 5
    assert ranks[0] == ranks[1] == alone
    assert alone["pruned"]  # halving pruned something, identically on every rank
