"""Trainable-only checkpoints for Equinox, Flax NNX and Linen pytrees."""

from __future__ import annotations

import json
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax_models import NnxNet, arrays_by_name, batch, eqx_net
from safetensors import safe_open
from safetensors.numpy import save_file

import frostline as fl

PLAN = fl.Plan.lock(2)


def train_eqx(model, plan, steps=3):
    trainable, frozen = fl.partition(model, plan)
    tx = optax.adamw(1e-2, weight_decay=0.1)
    state = tx.init(trainable)
    x, y = batch()
    for _ in range(steps):
        grads = eqx.filter_grad(lambda t: jnp.mean(
            (jax.vmap(fl.combine(t, frozen))(x) - y) ** 2))(trainable)
        updates, state = tx.update(grads, state, trainable)
        trainable = eqx.apply_updates(trainable, updates)
    return fl.combine(trainable, frozen)


def stored(path) -> set[str]:
    with safe_open(path, framework="numpy") as handle:
        return set(handle.keys())


def test_equinox_round_trip_restores_trained_leaves_onto_a_fresh_base(tmp_path):
    trained = train_eqx(eqx_net(), PLAN)
    path = tmp_path / "top.safetensors"
    info = fl.save_trainable(trained, path, PLAN)
    assert stored(path) == set(info.tensors) == set(fl.mask(trained, PLAN).trainable_names())
    restored = fl.load_trainable(eqx_net(), path)
    got, want, base = (arrays_by_name(m) for m in (restored, trained, eqx_net()))
    assert all(np.array_equal(got[n], want[n]) for n in want)
    assert any(not np.array_equal(want[n], base[n]) for n in info.tensors)


def test_metadata_holds_the_plan_and_digests_of_the_frozen_base(tmp_path):
    path = tmp_path / "top.safetensors"
    fl.save_trainable(eqx_net(), path, PLAN)
    with safe_open(path, framework="numpy") as handle:
        meta = handle.metadata()
    assert fl.Plan.from_json(meta["frostline.plan"]) == PLAN
    digests = json.loads(meta["frostline.base"])["digests"]
    assert set(digests) == set(fl.mask(eqx_net(), PLAN).frozen_names())


def test_other_frozen_weights_are_refused(tmp_path):
    path = tmp_path / "top.safetensors"
    fl.save_trainable(eqx_net(), path, PLAN)
    with pytest.raises(fl.CheckpointError, match="other frozen weights"):
        fl.load_trainable(eqx_net(seed=1), path)
    assert fl.load_trainable(eqx_net(seed=1), path, check_base=False) is not None


def test_another_architecture_is_refused(tmp_path):
    path = tmp_path / "top.safetensors"
    fl.save_trainable(eqx_net(), path, PLAN)
    with pytest.raises(fl.CheckpointError, match="different base model.*changed"):
        fl.load_trainable(eqx_net(width=6), path)


def test_a_jax_checkpoint_needs_the_plan(tmp_path):
    with pytest.raises(fl.CheckpointError, match="pass the plan"):
        fl.save_trainable(eqx_net(), tmp_path / "x.safetensors")


def _rewrite(path, drop=(), add=None):
    """The same checkpoint with some arrays dropped or added (metadata kept)."""
    with safe_open(path, framework="numpy") as handle:
        meta = handle.metadata()
        arrays = {k: handle.get_tensor(k) for k in handle.keys() if k not in drop}
    save_file({**arrays, **(add or {})}, path, metadata=meta)


def test_a_file_missing_an_array_the_plan_trains_is_refused(tmp_path):
    path = tmp_path / "top.safetensors"
    fl.save_trainable(eqx_net(), path, PLAN)
    _rewrite(path, drop=("head.bias",))
    with pytest.raises(fl.CheckpointError, match=r"1 arrays it trains are not in the file \("
                                                 r"'head.bias'\)"):
        fl.load_trainable(eqx_net(), path)


def test_a_file_with_an_array_the_plan_does_not_train_is_refused(tmp_path):
    path = tmp_path / "top.safetensors"
    fl.save_trainable(eqx_net(), path, PLAN)
    _rewrite(path, add={"stem.bias": np.zeros(8, np.float32)})
    with pytest.raises(fl.CheckpointError, match="holds 1 arrays it does not train.*stem.bias"):
        fl.load_trainable(eqx_net(), path, check_base=False)


def test_crash_mid_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "top.safetensors"
    fl.save_trainable(eqx_net(), path, PLAN)
    previous = path.read_bytes()

    real_fsync = os.fsync

    def crashing_fsync(fd):
        os.write(fd, b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crashing_fsync)
    with pytest.raises(OSError, match="disk full"):
        fl.save_trainable(train_eqx(eqx_net(), PLAN, steps=1), path, PLAN)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == previous
    assert os.listdir(tmp_path) == ["top.safetensors"]


def test_shared_array_is_stored_once_and_restored_under_both_names(tmp_path):
    shared = jnp.arange(4.0)
    tree = {"a": {"w": shared}, "b": {"w": shared}, "c": {"w": jnp.ones(4)}}
    plan = fl.Plan().freeze("c")
    path = tmp_path / "tied.safetensors"
    assert fl.save_trainable(tree, path, plan).tensors == ("a.w",)
    base = {"a": {"w": jnp.zeros(4)}, "c": {"w": jnp.ones(4)}}
    base["b"] = base["a"]
    restored = fl.load_trainable(base, path)
    assert restored["a"]["w"] is restored["b"]["w"]
    assert np.array_equal(restored["b"]["w"], shared)


# --- Flax NNX: in place, BatchNorm statistics and modes -----------------------------------


def train_nnx(model, plan, steps=2):
    wrt = fl.nnx_filter(model, plan)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=wrt)
    x, y = batch()
    for _ in range(steps):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2),
                         argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)
    return model


def nnx_arrays(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model)) if hasattr(v.get_value(), "shape")}


def test_nnx_round_trip_with_fixed_statistics(tmp_path):
    plan = fl.Plan.lock(2, freeze_bn_stats=True)
    model = fl.apply(NnxNet(), plan)
    trained = train_nnx(model, plan)
    path = tmp_path / "nnx.safetensors"
    info = fl.save_trainable(trained, path, plan)
    assert "blocks.2.bn.mean" in info.tensors and "blocks.1.bn.mean" not in info.tensors
    base = NnxNet()
    restored = fl.load_trainable(base, path)
    assert restored is base
    got, want = nnx_arrays(restored), nnx_arrays(trained)
    assert all(np.array_equal(got[n], want[n]) for n in want)
    assert [b.bn.use_running_average for b in restored.blocks] == [True, True, False]


# --- Flax Linen variables ------------------------------------------------------------------


def test_linen_variables_round_trip_after_a_jitted_step(tmp_path):
    from linen_models import BnNet, init

    fresh = init(BnNet(), jnp.ones((2, 3)))
    trainable, frozen = fl.partition(fresh, PLAN)
    # a jitted update of the trainable part: JAX hands the dicts back with sorted keys
    trained = jax.jit(lambda t, f: fl.combine(jax.tree_util.tree_map(lambda a: a + 1, t), f))(
        trainable, frozen)
    path = tmp_path / "linen.safetensors"
    info = fl.save_trainable(trained, path, PLAN)
    assert {n.split(".")[1] for n in info.tensors if n.startswith("params")} == {
        "BnBlock_2", "head"}
    restored = fl.load_trainable(fresh, path)
    got, want = arrays_by_name(restored), arrays_by_name(trained)
    assert all(np.array_equal(got[n], want[n]) for n in info.tensors)
    base = arrays_by_name(fresh)
    assert all(np.array_equal(got[n], base[n]) for n in base if n not in info.tensors)
