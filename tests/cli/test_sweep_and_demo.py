"""``frostline sweep`` and ``frostline demo``: measured frost lines, cached and uncached."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import frostline as fl
from frostline.demo import pretrained_digit_net, source_data, tasks
from frostline.torch._sweep import Setting


def sweep_accuracies(data: dict) -> list[list[float]]:
    return [[row["val_accuracy"] for row in task["sweep"]["rows"]] for task in data["tasks"]]


def test_sweep_json_reports_cached_and_uncached_runs_and_writes_the_plot(cli, tmp_path):
    plot = tmp_path / "sweep.png"
    data = cli.json("sweep", "--epochs", "1", "--unlocked", "1-2", "--no-lp-ft",
                    "--plot", str(plot), "--json")
    (task,) = data["tasks"]
    sweep = task["sweep"]
    # The recommended setting joins the chosen ones.
    recommended = _recommended("new-digits")
    assert [r["label"] for r in sweep["rows"]] == ["1", "2"] + (
        [recommended] if recommended not in ("1", "2") else [])
    assert [r["val_accuracy"] for r in sweep["rows"]] == [
        r["val_accuracy"] for r in sweep["uncached"]["rows"]]
    assert [r["cached_groups"] for r in sweep["rows"]][:2] == [4, 3]
    # The cached and uncached runs are disjoint spans of the command, which the command times
    # from the outside; every row's epochs fit in its own time.
    assert sweep["seconds"] + sweep["uncached"]["seconds"] <= data["seconds"]
    for row in sweep["rows"] + sweep["uncached"]["rows"]:
        assert row["epoch_seconds"] * row["epochs"] <= row["seconds"]
    assert sweep["cache_seconds"] <= sweep["seconds"]
    assert task["recommended_setting"] == recommended
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["plot"] == str(plot)


def test_sweep_without_cache_trains_the_whole_model(cli):
    data = cli.json("sweep", "--task", "noisy", "--epochs", "1", "--unlocked", "1",
                    "--no-lp-ft", "--no-cache", "--json")
    sweep = data["tasks"][0]["sweep"]
    assert not sweep["cached"] and "uncached" not in sweep
    # The recommendation is added when the chosen settings lack it.
    recommended = _recommended("noisy")
    assert recommended != "1"
    assert [r["label"] for r in sweep["rows"]] == ["1", recommended]


def _recommended(name: str) -> str:
    task = next(t for t in tasks() if t.name == name)
    rec = fl.recommend(pretrained_digit_net(), len(task.train[1]), task.domain_shift,
                       new_head=task.new_head)
    return Setting.from_recommendation(rec).label


@pytest.mark.slow
def test_demo_is_deterministic_and_reports_recommendation_and_best(cli):
    argv = ["demo", "--epochs", "1", "--no-compare", "--no-plot", "--json"]
    threads = torch.get_num_threads()
    first, second = cli.json(*argv), cli.json(*argv)
    assert sweep_accuracies(first) == sweep_accuracies(second)
    assert torch.get_num_threads() == threads
    assert [t["task"] for t in first["tasks"]] == ["new-digits", "noisy"]
    for task, again in zip(first["tasks"], second["tasks"]):
        rows = {r["label"]: r["val_accuracy"] for r in task["sweep"]["rows"]}
        assert task["recommended_setting"] in rows
        assert rows[task["best_setting"]] == max(rows.values())
        # The measured choice ran on the same budget: its survivors are full-sweep rows.
        choice = task["choice"]
        for key in ("setting", "val_accuracy"):
            assert choice[key] == again["choice"][key]
        for key in ("plan", "schedule", "trainable_groups"):
            assert choice["recommendation"][key] == again["choice"]["recommendation"][key]
        assert choice["setting"] in rows
        finished = [r for r in choice["sweep"]["rows"] if r["pruned_after"] is None]
        assert all(r["val_accuracy"] == rows[r["label"]] for r in finished)


@pytest.mark.slow
def test_the_training_script_reproduces_the_shipped_demo_weights():
    path = Path(__file__).resolve().parents[2] / "scripts" / "train_demo_source.py"
    spec = importlib.util.spec_from_file_location("train_demo_source", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        retrained, accuracy = script.train()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)
    # Bit-identical only on the same CPU kernels: other instruction sets order float sums
    # differently, and 30 epochs of training grow that 1e-7 to a few percent per tensor. The
    # script must still give the same network: the same tensors, the same predictions.
    shipped = pretrained_digit_net().state_dict()
    assert {n: t.shape for n, t in retrained.state_dict().items()} == {
        n: t.shape for n, t in shipped.items()}
    held_out = source_data()[1][0]
    with torch.no_grad():
        agree = (retrained.eval()(held_out).argmax(1)
                 == pretrained_digit_net().eval()(held_out).argmax(1)).float().mean().item()
    assert agree >= 0.98
    assert accuracy > 0.95

