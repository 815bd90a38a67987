"""Hostile input at the command line: every problem is a one-line error with exit code 2."""

from __future__ import annotations

import io
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from frostline.cli._data import DataError, load_npz

MODELS = textwrap.dedent("""
    import sys

    import torch


    def exits():
        sys.exit(0)


    def no_parameters():
        return torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Flatten())


    def wide():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(400, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


    def small():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
""")


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "hostile_models.py").write_text(MODELS)
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_factory_that_exits_0_is_an_error_not_a_silent_success(cli, models):
    code, out, err = cli.main("inspect", "hostile_models:exits")
    assert code == 2 and out == ""
    assert "hostile_models:exits called exit(0) instead of returning a model" in cli.error_line(err)


def test_a_module_that_exits_on_import_is_an_error(cli, models):
    code, _, err = cli.main("inspect", "exits_on_import:factory")
    assert code == 2
    assert "importing exits_on_import for the model factory called exit(0)" in cli.error_line(err)


@pytest.mark.parametrize("command", [["inspect"], ["plan", "--unlocked-groups", "0"],
                                     ["recommend", "--n-train", "10"]])
def test_a_model_without_parameters_is_refused(cli, models, command):
    code, _, err = cli.main(command[0], "hostile_models:no_parameters", *command[1:])
    assert code == 2
    assert "built a Sequential without parameters: there is nothing to freeze or train" in (
        cli.error_line(err))


def test_an_hf_folder_without_config_json_is_refused(cli, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    code, _, err = cli.main("inspect", f"hf:{tmp_path}")
    assert code == 2
    assert "is a folder without config.json" in cli.error_line(err)


@pytest.mark.parametrize("target", ["missing/plan.yaml", "."])
def test_save_into_a_missing_folder_or_onto_a_folder_is_refused(cli, models, tmp_path, target):
    path = tmp_path / target
    code, _, err = cli.main("plan", "hostile_models:small", "--unlocked-groups", "1", "--save",
                            str(path))
    assert code == 2
    assert "cannot write the plan to" in cli.error_line(err)


# --- the .npz reader -----------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


GOOD = {"x_train": np.zeros((4, 2), np.float32), "y_train": np.array([0, 1, 0, 1]),
        "x_val": np.zeros((2, 2), np.float32), "y_val": np.array([1, 0])}


def _archive(path: Path, members: dict[str, bytes],
             compression: int = zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def _good_members(**replace: bytes) -> dict[str, bytes]:
    members = {f"{key}.npy": _npy(value) for key, value in GOOD.items()}
    members.update(replace)
    return members


def test_a_member_that_is_not_npy_is_named_as_missing(tmp_path):
    members = _good_members()
    members["x_train"] = members.pop("x_train.npy")  # a plain file, no .npy suffix
    with pytest.raises(DataError, match=r"lacks x_train: expected an \.npz with \.npy arrays.*"
                       r"found y_train\.npy, x_val\.npy, y_val\.npy, x_train\)"):
        load_npz(_archive(tmp_path / "d.npz", members))


def test_a_header_claiming_a_trillion_elements_is_corrupt_before_any_allocation(tmp_path):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12, 2)})
    bad = buffer.getvalue() + b"\0" * 32
    with pytest.raises(DataError, match=r"member x_train\.npy is corrupt: its header says "
                       r"float32 \(1000000000000, 2\) \(8,000,000,000,000 bytes of data\) but the "
                       r"member holds 32"):
        load_npz(_archive(tmp_path / "d.npz", _good_members(**{"x_train.npy": bad})))


def test_truncated_data_is_reported_as_corrupt_not_as_python_objects(tmp_path):
    truncated = _npy(np.zeros((4, 2), np.float32))[:-5]
    with pytest.raises(DataError, match=r"member x_train\.npy is corrupt") as caught:
        load_npz(_archive(tmp_path / "d.npz", _good_members(**{"x_train.npy": truncated})))
    assert "Python objects" not in str(caught.value)


def test_a_damaged_header_is_reported_as_not_a_valid_npy(tmp_path):
    with pytest.raises(DataError, match=r"member y_val\.npy is not a valid \.npy array"):
        load_npz(_archive(tmp_path / "d.npz", _good_members(**{"y_val.npy": b"\x93NUMPY garbage"})))


def test_a_compressed_bomb_is_refused_from_its_header_before_loading(tmp_path):
    bomb = _npy(np.zeros((64, 1024, 1024), np.uint8))  # 64 MiB of zeros, 64 KiB compressed
    path = _archive(tmp_path / "d.npz", _good_members(**{"x_val.npy": bomb}),
                    compression=zipfile.ZIP_DEFLATED)
    assert Path(path).stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"the arrays hold 67,108,944 bytes, over the limit of "
                       r"1,048,576 .*x_val uint8 \(64, 1024, 1024\).*--max-data-mb"):
        load_npz(path, max_bytes=1 << 20)


def test_object_arrays_are_still_refused_as_python_objects(tmp_path):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([{}, {}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"x_train\.npy holds Python objects"):
        load_npz(_archive(tmp_path / "d.npz", _good_members(**{"x_train.npy": buffer.getvalue()})))


def test_the_size_limit_is_a_command_line_option(cli, models, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(1000, 400)).astype(np.float32),  # 1.6 MB
             y_train=np.arange(1000) % 2, x_val=rng.normal(size=(50, 400)).astype(np.float32),
             y_val=np.arange(50) % 2)
    code, out, err = cli.main("sweep", "hostile_models:wide", "--data", str(path),
                              "--max-data-mb", "1")
    assert code == 2 and out == ""
    assert "over the limit of 1,048,576" in cli.error_line(err)
    code, out, err = cli.main("sweep", "hostile_models:wide", "--data", str(path),
                              "--max-data-mb", "2", "--epochs", "1", "--no-lp-ft", "--no-compare",
                              "--json")
    assert code == 0, err


@pytest.mark.parametrize("content, says", [
    ("a: &a [x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nversion: *b\n".encode(),
     "anchor or alias"),
    ("rules: [{freeze: 'n\xe4me:bias'}]".encode("latin-1"), "is not UTF-8 text"),
    (("rules: " + "[" * 500 + "]" * 500).encode(), "nests more than 32 levels"),
    (("version: " + "1" * 5000).encode(), "holds a value that cannot be read"),
    (b"rules: [{freeze: 're:\"(a+)+$\"'}]", "matches nothing"),  # no hang: RE2
    (b"rules: [{freeze: 'group:-2'}]", "ambiguous"),
])
def test_hostile_plan_files_are_one_line_errors(cli, tmp_path, content, says):
    path = tmp_path / "plan.yaml"
    path.write_bytes(content)
    code, out, err = cli.main("plan", "demo", "--check", str(path))
    assert code == 2 and out == ""
    line = cli.error_line(err)
    assert says in line and len(line) < 1000
