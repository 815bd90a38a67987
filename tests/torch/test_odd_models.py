"""Odd models and bad plan files: nothing is lost, nothing changes silently."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import frostline as fl
from frostline.torch._batchnorm import stats_frozen


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    tensors = {n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()}
    grads = {n: p.requires_grad for n, p in model.named_parameters(remove_duplicate=False)}
    return tensors, grads


def _unchanged(model: nn.Module, before: tuple[dict[str, torch.Tensor], dict[str, bool]]) -> bool:
    tensors, grads = _snapshot(model)
    return grads == before[1] and tensors.keys() == before[0].keys() and all(
        _equal(tensors[n], before[0][n]) for n in tensors)


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_quantized:
        return b.is_quantized and a.q_scale() == b.q_scale() and torch.equal(
            a.int_repr(), b.int_repr())
    return torch.equal(a, b)


def _step(model: nn.Module, x: torch.Tensor) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(x).square().sum().backward()
    opt.step()


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


# --- plan files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("version: 1\nrules:\n  - freez: '**'\n", r"rule 0 must have exactly one of"),
    ("version: 1\nrules: []\nfreeze_bn: true\n", r"unknown plan keys \['freeze_bn'\]"),
    ("version: 1\nrules: []\nfreeze_bn_stats: 'yes'\n", r"'freeze_bn_stats' must be true or"),
    ("version: 1\nrules:\n  - freeze: 3\n", r"rule 0: the selector must be a string, got 3"),
])
def test_bad_plan_file_is_refused_before_the_model_is_touched(tmp_path, text, message):
    model = _mlp()
    before = _snapshot(model)
    target = tmp_path / "plan.yaml"
    target.write_text(text)
    with pytest.raises(fl.PlanError, match=message):
        fl.apply(model, fl.Plan.load(str(target)))
    assert _unchanged(model, before)


def test_plan_file_with_a_typo_freezes_nothing_and_names_the_closest(tmp_path):
    model = _mlp()
    before = _snapshot(model)
    target = tmp_path / "plan.yaml"
    target.write_text("version: 1\nrules:\n  - freeze: '**'\n  - unfreeze: '4.wieght'\n")
    with pytest.raises(fl.SelectorError,
                       match=r"rule 1 \(unfreeze 4\.wieght\) matches nothing.*closest: '4\.weight'"):
        fl.apply(model, fl.Plan.load(str(target)))
    assert _unchanged(model, before)


# --- models without parameters ---------------------------------------------------------------------


def test_model_without_tensors_locks_saves_and_loads(tmp_path):
    model = nn.Sequential(nn.ReLU(), nn.Dropout())
    assert fl.lock(model, 0) == fl.Plan.lock(0)
    assert fl.summary(model).total_line == "trainable 0 / 0 (0.0%)"
    assert fl.save_trainable(model, tmp_path / "ck.safetensors").tensors == ()
    assert fl.load_trainable(nn.Sequential(nn.ReLU(), nn.Dropout()),
                             tmp_path / "ck.safetensors").tensors == ()
    with pytest.raises(fl.GroupError, match=r"cannot unlock 2 groups: the model has 1 groups"):
        fl.lock(model, 2)


def test_buffer_only_batchnorm_keeps_frozen_statistics():
    model = nn.Sequential(nn.BatchNorm1d(4, affine=False))
    fl.lock(model, 0, freeze_bn_stats=True)
    before = _snapshot(model)
    model.train()
    model(torch.randn(8, 4) * 3 + 1)
    assert stats_frozen(model[0]) and not model[0].training
    assert _unchanged(model, before)


# --- parameters on the root ------------------------------------------------------------------------


class _RootScale(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.scale = nn.Parameter(torch.ones(4))
        self.blocks = nn.Sequential(*[nn.Linear(4, 4) for _ in range(3)])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.blocks(x * self.scale))


def test_root_parameter_is_selected_by_its_own_name():
    model = _RootScale()
    fl.apply(model, fl.Plan().freeze("scale"))
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["scale"]


def test_root_parameter_is_frozen_by_lock_and_stays_put():
    model = _RootScale()
    fl.lock(model, 1)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "head.weight", "head.bias"]
    scale, head = model.scale.detach().clone(), model.head.weight.detach().clone()
    _step(model, torch.randn(3, 4))
    assert torch.equal(model.scale, scale)
    assert not torch.equal(model.head.weight, head)


# --- one module under two paths --------------------------------------------------------------------


class _TwoPaths(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 4)
        self.b = self.a
        self.c = nn.Linear(4, 2)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_module_under_two_paths_is_seen_under_both():
    view = fl.view(_TwoPaths())
    assert view["a.weight"].tied_to == ("b.weight",)
    assert view["b.bias"].tied_to == ("a.bias",)


def test_freezing_one_path_of_a_shared_module_is_refused_and_changes_nothing():
    model = _TwoPaths()
    before = _snapshot(model)
    with pytest.raises(fl.TiedWeightError, match=r"'a\.weight' and 'b\.weight' are the same"):
        fl.apply(model, fl.Plan().freeze("a"))
    assert _unchanged(model, before)


def test_shared_module_frozen_by_lock_stays_put_and_saves_once(tmp_path):
    model = _TwoPaths()
    fl.lock(model, 1)
    shared = model.a.weight.detach().clone()
    _step(model, torch.randn(3, 4))
    assert torch.equal(model.b.weight, shared)
    info = fl.save_trainable(model, tmp_path / "ck.safetensors")
    assert info.tensors == ("c.weight", "c.bias")


# --- integer and quantised tensors -----------------------------------------------------------------


def _with_int_tensors() -> nn.Sequential:
    model = _mlp()
    model[0].register_buffer("counts", torch.arange(5))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        model[2].register_buffer(
            "codes", torch.quantize_per_tensor(torch.linspace(-1, 1, 6), 0.05, 2, torch.qint8))
    model[4].steps = nn.Parameter(torch.arange(3), requires_grad=False)
    return model


def test_unfreezing_everything_leaves_integer_parameters_frozen():
    model = _with_int_tensors()
    fl.apply(model, fl.Plan().freeze("**").unfreeze("**"))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == {
        "0.weight": True, "0.bias": True, "2.weight": True, "2.bias": True,
        "4.weight": True, "4.bias": True, "4.steps": False}


def test_plan_mask_and_summary_count_integer_parameters_as_frozen():
    model = _with_int_tensors()
    plan = fl.Plan().unfreeze("**")
    assert fl.mask(model, plan)["4.steps"] is False
    explained = {row.name: row for row in fl.explain(model, plan).rows}
    assert explained["4.steps"].decided_by == "integer dtype: cannot train"
    floats = sum(p.numel() for p in model.parameters() if p.is_floating_point())
    assert fl.summary(model, plan).trainable == floats


def test_integer_and_quantised_tensors_survive_lock_and_training():
    model = _with_int_tensors()
    fl.lock(model, 1)
    frozen = {n: t.detach().clone() for n, t in model.state_dict().items()
              if not n.startswith("4.") or n == "4.steps"}
    with fl.guard(model, buffers=True):
        _step(model, torch.randn(3, 4))
    after = model.state_dict()
    assert all(_equal(after[n], frozen[n]) for n in frozen)
    assert set(frozen) >= {"0.counts", "2.codes", "4.steps"}


def test_quantised_buffer_is_part_of_the_checkpoint_fingerprint(tmp_path):
    model = _with_int_tensors()
    base = copy.deepcopy(model)
    fl.lock(model, 1)
    _step(model, torch.randn(3, 4))
    fl.save_trainable(model, tmp_path / "ck.safetensors")
    restored = copy.deepcopy(base)
    fl.load_trainable(restored, tmp_path / "ck.safetensors")
    assert _unchanged(restored, _snapshot(model))
    other = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        other[2].codes = torch.quantize_per_tensor(torch.linspace(-1, 1, 6), 0.1, 2, torch.qint8)
    with pytest.raises(fl.CheckpointError, match=r"1 frozen tensors .*\('2\.codes'\)"):
        fl.load_trainable(other, tmp_path / "ck.safetensors")


# --- a very large model on the meta device ---------------------------------------------------------


class _WideBlock(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        for i in range(n):
            self.register_parameter(f"w{i}", nn.Parameter(torch.empty(8, 8)))


@pytest.mark.slow
def test_lock_on_a_100k_tensor_meta_model_keeps_exactly_the_top_groups():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8),
                              nn.Sequential(*[_WideBlock(100) for _ in range(1000)]),
                              nn.Linear(8, 2))
    params = dict(model.named_parameters())
    assert len(params) == 100_004
    fl.lock(model, 3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"1.{b}.w{i}" for b in (998, 999) for i in range(100)} | {"2.weight", "2.bias"}
    assert trainable == expected
    after = dict(model.named_parameters())
    assert after.keys() == params.keys()
    assert all(after[n] is params[n] and after[n].is_meta and after[n].shape == (8, 8)
               for n in params if n.startswith("1."))
