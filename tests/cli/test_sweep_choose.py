"""``frostline choose MODEL --data FILE.npz``: the measured recommendation on your data."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from frostline import Plan

MODELS = textwrap.dedent("""
    import torch


    def sequential():
        torch.manual_seed(7)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
            torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
""")


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from sklearn.datasets import load_digits

    (tmp_path / "choose_models.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=x[:200], y_train=bunch.target[:200], x_val=x[200:400],
             y_val=bunch.target[200:400])
    return path


def test_choose_prints_the_measured_recommendation_and_saves_its_plan(cli, data, tmp_path):
    saved = tmp_path / "plan.yaml"
    out = cli.json("choose", "choose_models:sequential", "--data", str(data), "--epochs", "2",
                   "--save", str(saved), "--json")
    sweep, rec = out["sweep"], out["recommendation"]
    best = next(row for row in sweep["rows"] if row["label"] == sweep["best"])
    assert rec["plan"] == Plan.load(saved).to_dict()
    assert best["plan"] == str(Plan.from_dict(rec["plan"]))
    assert f"{100 * best['val_accuracy']:.1f}%" in " ".join(rec["reasons"])
    assert out["prior"]["strategy"] == "linear-probe"  # 200 examples, no shift
    # 100 steps at least (15 epochs of 7 batches): pruned after a sixteenth or a quarter.
    assert sweep["pruned"] and all(p["after_epochs"] < 15 / 4 + 1 for p in sweep["pruned"])


def test_choose_text_marks_the_chosen_and_the_rules_pick(cli, data):
    code, out, err = cli.main("choose", "choose_models:sequential", "--data", str(data),
                              "--epochs", "2", "--min-steps", "0", "--no-halving")
    assert code == 0, err
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│")]
    marks = {cells[0]: cells[-1] for cells in rows}
    assert [label for label, mark in marks.items() if "chosen" in mark] == [rows[0][0]]
    assert "rules' pick" in marks["1"]
    assert not any("stopped" in mark for mark in marks.values())


def test_choose_without_data_is_a_usage_error(cli, data):
    code, _, err = cli.main("choose", "choose_models:sequential")
    assert code == 2
    assert "--data" in cli.error_line(err)
