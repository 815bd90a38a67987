"""Hostile checkpoint files: any metadata or bytes end in a CheckpointError (the model untouched)
or a correct load, each case in bounded time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import frostline as fl

# A generous bound per case: a recursion blow-up or a backtracking regex takes minutes.
HOSTILE = settings(max_examples=60, deadline=5000,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.function_scoped_fixture])
KEYS = ("frostline.plan", "frostline.state", "frostline.base")


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    model = _net()
    fl.apply(model, fl.Plan().freeze("**").unfreeze("2").with_bn(freeze_bn_stats=True))
    path = tmp_path_factory.mktemp("ck") / "ck.safetensors"
    fl.save_trainable(model, path)
    with safe_open(os.fspath(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["version", "rules", "freeze", "trainable", "frozen_stats",
                         "architecture", "digests"]) | st.text(max_size=5), inner, max_size=4),
    max_leaves=15)
SELECTORISH = st.lists(st.sampled_from(
    ["(", ")", "!", "re:", "(a+)+$", "a{99999999999}", "group:", "-2", "1_0", "2", "**",
     "name:", '"', ",", "|", "&", "[01]", "[", "\\"]), max_size=12).map("".join)
VALUE = (JSON.map(json.dumps) | st.text(max_size=200) | SELECTORISH.map(
    lambda text: json.dumps({"version": 1, "rules": [{"freeze": text}]})) | st.builds(
    lambda n: "[" * n + "]" * n, st.integers(100, 20000)))


def _load_or_error(path: Path) -> None:
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        info = fl.load_trainable(model, path)
    except fl.CheckpointError as exc:
        assert str(exc) and len(str(exc)) < 2000
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "touched on refusal"
        return
    assert set(info.tensors) <= {"2.weight", "2.bias", "1.running_mean", "1.running_var",
                                 "1.num_batches_tracked"}


@HOSTILE
@given(st.sampled_from(KEYS), VALUE)
@example("frostline.base", '{"architecture": [], "digests": []}')
@example("frostline.plan", json.dumps({"version": 1, "rules": [{"freeze": "(" * 400 + "a"
                                                                + ")" * 400}]}))
@example("frostline.plan", json.dumps({"version": 1, "rules": [{"freeze": "re:(a+)+$"}]}))
@example("frostline.plan", json.dumps({"version": 1, "rules": [{"freeze": 'path:"\\""'}]}))
def test_any_metadata_value_loads_correctly_or_is_a_checkpoint_error(saved, tmp_path, key, value):
    tensors, meta = saved
    path = tmp_path / "fuzzed.safetensors"
    save_file(tensors, path, metadata={**meta, key: value})
    _load_or_error(path)


@HOSTILE
@given(st.binary(max_size=400), st.integers(0, 10_000))
def test_any_bytes_or_damaged_file_is_a_checkpoint_error(saved, tmp_path, noise, where):
    tensors, meta = saved
    path = tmp_path / "fuzzed.safetensors"
    save_file(tensors, path, metadata=meta)
    data = bytearray(path.read_bytes())
    where %= len(data)
    data[where:where + len(noise)] = noise  # overwrite a stretch (also: the header) with noise
    path.write_bytes(bytes(data) if noise else bytes(data[:where]))
    _load_or_error(path)
