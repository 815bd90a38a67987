"""Hostile .npz files: any bytes end in a DataError or a correct data set, each case in bounded
time, and no array larger than the limit is ever allocated."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from frostline.cli._data import ArrayData, DataError, load_npz

HOSTILE = settings(max_examples=80, deadline=5000,
                   suppress_health_check=[HealthCheck.too_slow])
LIMIT = 1 << 20


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _valid() -> dict[str, bytes]:
    return {"x_train.npy": _npy(np.zeros((4, 2), np.float32)),
            "y_train.npy": _npy(np.array([0, 1, 0, 1])),
            "x_val.npy": _npy(np.zeros((2, 2), np.float32)),
            "y_val.npy": _npy(np.array([1, 0]))}


def _load_or_error(path) -> None:
    try:
        data = load_npz(str(path), max_bytes=LIMIT)
    except DataError as exc:
        assert str(exc) and len(str(exc)) < 2000
        return
    assert isinstance(data, ArrayData)
    total = sum(a.nbytes for a in (data.x_train, data.y_train, data.x_val, data.y_val))
    assert total <= 2 * LIMIT  # inputs are widened to float32 at most (bool, int8 -> float32)


HEADER_DICTS = st.fixed_dictionaries({
    "descr": st.sampled_from(["<f4", "<i8", "|b1", "|O", "<c16", "|V8", "<U3", ">f8", "xx"]),
    "fortran_order": st.booleans(),
    "shape": st.lists(st.integers(-2, 10 ** 13), max_size=4).map(tuple),
})


def _header(fields: dict) -> bytes:
    text = repr(fields)
    header = text.encode("latin1") + b" " * (64 - (10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@HOSTILE
@given(st.sampled_from(list(_valid())), HEADER_DICTS, st.binary(max_size=200),
       st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
@example("x_train.npy", {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12, 2)}, b"",
         zipfile.ZIP_STORED)
def test_any_npy_header_is_checked_before_allocation(tmp_path_factory, member, fields, body,
                                                     compression):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in {**_valid(), member: _header(fields) + body}.items():
            archive.writestr(name, data)
    _load_or_error(path)


@HOSTILE
@given(st.binary(max_size=64), st.integers(0, 10_000), st.booleans())
@example(b"\x08" + b"\x00" * 18 + b"\x10", 141, False)  # a member name that is not UTF-8
def test_any_damaged_archive_is_a_data_error_or_loads(tmp_path_factory, noise, where, truncate):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x_train=np.zeros((8, 3), np.float32), y_train=np.arange(8) % 2,
                        x_val=np.ones((4, 3), np.float32), y_val=np.arange(4) % 2)
    data = bytearray(buffer.getvalue())
    where %= len(data)
    data = data[:where] if truncate else data[:where] + noise + data[where + len(noise):]
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(bytes(data))
    _load_or_error(path)


@HOSTILE
@given(st.binary(max_size=500))
def test_arbitrary_bytes_are_a_data_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(b"PK\x03\x04" + data if data[:1] == b"P" else data)
    _load_or_error(path)
