"""One plan, one architecture, two frameworks: PyTorch and Equinox freeze the same names."""

from __future__ import annotations

import equinox as eqx
import pytest
from jax_models import arrays_by_name, eqx_net

import frostline as fl

torch = pytest.importorskip("torch")
nn = torch.nn


class MLP(nn.Module):
    """Named and laid out as ``eqx.nn.MLP``: ``layers.<i>.weight``."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(depth + 1)])


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)


class Net(nn.Module):
    """The PyTorch twin of ``jax_models.Net``: stem, ``A`` (an MLP), blocks, head."""

    def __init__(self, width: int = 8, depth: int = 3):
        super().__init__()
        self.stem = nn.Linear(3, width)
        self.A = MLP(width, 2)
        self.layers = nn.ModuleList([Block(width) for _ in range(depth)])
        self.head = nn.Linear(width, 2)


PLANS = {
    **{f"lock {k}": fl.Plan.lock(k) for k in range(6)},
    "bias": fl.Plan().freeze("name:bias"),
    "module A": fl.Plan().freeze("name:A"),
    "class MLP": fl.Plan().freeze("class:MLP"),
    "type Linear but head": fl.Plan().freeze("type:Linear").unfreeze("head"),
    "glob": fl.Plan().freeze("layers.*.fc1"),
    "group slice": fl.Plan().freeze("group:1:3"),
    "regex": fl.Plan().freeze(r"re:^layers\.[02]\."),
    "mixed": fl.Plan().freeze("**").unfreeze("group:-2:").freeze("name:bias"),
}


def test_both_frameworks_see_the_same_leaves_and_groups():
    torch_net, eqx_model = Net(), eqx_net()
    assert fl.view(torch_net).names == fl.view(eqx_model).names
    assert fl.groups(torch_net).names == fl.groups(eqx_model).names


@pytest.mark.parametrize("plan", list(PLANS))
def test_same_plan_freezes_the_same_names(plan):
    torch_net, eqx_model = Net(), eqx_net()
    torch_frozen = fl.mask(torch_net, PLANS[plan]).frozen_names()
    eqx_frozen = fl.mask(eqx_model, PLANS[plan]).frozen_names()
    assert torch_frozen == eqx_frozen


@pytest.mark.parametrize("k", [0, 2, 5])
def test_lock_gives_requires_grad_and_filter_spec_that_agree(k):
    torch_net, eqx_model = Net(), eqx_net()
    fl.lock(torch_net, k)
    spec = fl.filter_spec(eqx_model, fl.lock(eqx_model, k))
    trainable, _ = fl.partition(eqx_model, fl.Plan.lock(k))
    expected = sorted(n for n, p in torch_net.named_parameters() if p.requires_grad)
    assert sorted(arrays_by_name(trainable)) == expected
    assert sorted(arrays_by_name(eqx.filter(eqx_model, spec))) == expected
