"""``frostline sweep MODEL --data FILE.npz``: the user's model on the user's classification data."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

import frostline as fl

OWN_MODELS = textwrap.dedent("""
    import timm
    import torch


    def tiny_resnet():
        return timm.create_model("test_resnet", in_chans=1, num_classes=10, pretrained=False)


    def sequential():
        torch.manual_seed(7)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
            torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
""")


@pytest.fixture
def own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module ``own_models`` on sys.path, and ``digits.npz`` from scikit-learn's digits."""
    from sklearn.datasets import load_digits

    (tmp_path / "own_models.py").write_text(OWN_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    np.savez(tmp_path / "digits.npz", x_train=x[:160], y_train=bunch.target[:160],
             x_val=x[160:320], y_val=bunch.target[160:320])
    return tmp_path


def test_a_timm_model_sweeps_from_cached_features_and_trains_what_each_setting_unlocks(cli, own):
    data = cli.json("sweep", "own_models:tiny_resnet", "--data", str(own / "digits.npz"),
                    "--epochs", "1", "--unlocked", "1,2", "--no-lp-ft", "--json")
    (task,) = data["tasks"]
    sweep = task["sweep"]
    assert task["n_train"] == 160 and task["n_val"] == 160
    assert sweep["cached"]
    assert [r["cached_groups"] for r in sweep["rows"]] == [len(sweep["groups"]) - 1,
                                                          len(sweep["groups"]) - 2]
    assert [r["val_accuracy"] for r in sweep["rows"]] == [
        r["val_accuracy"] for r in sweep["uncached"]["rows"]]
    import own_models

    expected = []
    for k in (1, 2):
        model = own_models.tiny_resnet()
        fl.lock(model, k)
        expected.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert [r["trainable_params"] for r in sweep["rows"]] == expected
    assert sweep["groups"] == fl.groups(own_models.tiny_resnet()).names


def test_a_sequential_model_on_own_data_reads_cached_features_with_identical_accuracies(cli, own):
    data = cli.json("sweep", "own_models:sequential", "--data", str(own / "digits.npz"),
                    "--epochs", "2", "--json")
    sweep = data["tasks"][0]["sweep"]
    assert sweep["cached"]
    assert [r["cached_groups"] for r in sweep["rows"]] == [2, 1, 0, 2]
    assert [r["val_accuracy"] for r in sweep["rows"]] == [
        r["val_accuracy"] for r in sweep["uncached"]["rows"]]


def test_the_recommended_setting_is_marked_by_value_not_by_label(cli, own):
    # 320 examples with a low shift: the rules say LP-FT over the last 2 groups; the sweep also
    # runs LP-FT over all 3 groups, which must not be marked as the recommendation.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    path = own / "digits320.npz"
    np.savez(path, x_train=x[:320], y_train=bunch.target[:320], x_val=x[320:400],
             y_val=bunch.target[320:400])
    code, out, err = cli.main("sweep", "own_models:sequential", "--data", str(path), "--shift",
                              "low", "--epochs", "1", "--unlocked", "1", "--no-compare")
    assert code == 0, err
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│")]
    marks = {cells[0]: cells[-1] for cells in rows}
    assert "recommended" in marks["LP-FT 2"]
    assert "recommended" not in marks["LP-FT 3"]
    assert [label for label, mark in marks.items() if "recommended" in mark] == ["LP-FT 2"]


def test_the_same_sweep_twice_gives_the_same_accuracies(cli, own):
    argv = ("sweep", "own_models:tiny_resnet", "--data", str(own / "digits.npz"), "--epochs", "1",
            "--unlocked", "1", "--no-lp-ft", "--json")
    first, second = cli.json(*argv), cli.json(*argv)
    assert first["tasks"][0]["sweep"]["rows"][0]["val_accuracy"] == \
        second["tasks"][0]["sweep"]["rows"][0]["val_accuracy"]


def _write(path: Path, **arrays: np.ndarray) -> str:
    base = {"x_train": np.zeros((4, 1, 8, 8), np.float32), "y_train": np.array([0, 1, 2, 3]),
            "x_val": np.zeros((2, 1, 8, 8), np.float32), "y_val": np.array([0, 1])}
    np.savez(path, **{k: v for k, v in {**base, **arrays}.items() if v is not None})
    return str(path)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"y_val": None}, r"lacks y_val"),
    ({"y_train": np.array([0.0, 1.0, 2.0, 3.0])}, r"y_train must hold integer class labels"),
    ({"x_val": np.zeros((2, 1, 4, 4), np.float32)}, r"x_train examples have shape .* x_val"),
    ({"y_train": np.array([0, 1, 2])}, r"x_train has 4 examples and y_train 3"),
    ({"y_val": np.array([0, -1])}, r"negative labels"),
    ({"x_train": np.array([{}, {}, {}, {}], dtype=object)}, r"Python objects"),
])
def test_a_bad_data_file_is_a_one_line_error_with_exit_code_2(cli, own, arrays, message):
    path = _write(own / "bad.npz", **arrays)
    code, out, err = cli.main("sweep", "own_models:sequential", "--data", path)
    assert code == 2
    assert out == ""
    assert re.search(message, cli.error_line(err))


def test_a_model_whose_head_does_not_cover_the_labels_is_refused(cli, own):
    code, _, err = cli.main("sweep", "demo", "--data", str(own / "digits.npz"))
    assert code == 2
    assert "at least 10 classes" in cli.error_line(err)


def test_a_file_that_is_not_an_npz_is_refused(cli, own):
    path = own / "notes.npz"
    path.write_text("not an archive")
    code, _, err = cli.main("sweep", "own_models:sequential", "--data", str(path))
    assert code == 2
    assert "cannot read the data file" in cli.error_line(err)


def test_a_model_without_data_is_a_usage_error(cli, own):
    code, _, err = cli.main("sweep", "own_models:sequential")
    assert code == 2
    assert "needs its data: pass --data" in cli.error_line(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_a_one_line_error_with_exit_code_2(cli, own, bad):
    x = np.random.default_rng(0).random((8, 1, 8, 8)).astype(np.float32)
    x[2, 0, 3, 3] = bad
    path = _write(own / "nan.npz", x_train=x, y_train=np.arange(8) % 4)
    code, out, err = cli.main("sweep", "own_models:sequential", "--data", path, "--epochs", "1")
    assert code == 2 and out == ""
    assert "NaN or infinite" in cli.error_line(err)
