"""Tree views of ``torch.nn.Module``: names, owner chains, kinds, states and shared tensors."""

from __future__ import annotations

import torch
from torch import nn

import frostline as fl


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.A = MLP()
        self.bn = nn.BatchNorm1d(4)
        self.register_buffer("scale", torch.ones(()))
        self.head = nn.Linear(4, 2)


def test_leaf_names_are_exactly_those_of_named_parameters_and_buffers():
    net = Net()
    view = fl.view(net)
    expected = {n for n, _ in net.named_parameters(remove_duplicate=False)} | {
        n for n, _ in net.named_buffers(remove_duplicate=False)}
    assert set(view.names) == expected
    assert len(view) == len(expected)


def test_a_module_comes_before_its_children_and_params_before_buffers():
    view = fl.view(Net())
    assert list(view.names) == [
        "scale", "A.fc1.weight", "A.fc1.bias", "A.fc2.weight", "A.fc2.bias", "bn.weight",
        "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
        "head.weight", "head.bias"]
    assert [leaf.index for leaf in view] == list(range(len(view)))


def test_owner_chain_runs_from_the_root_to_the_holding_module():
    leaf = fl.view(Net())["A.fc2.bias"]
    assert [(o.path, o.cls) for o in leaf.owners] == [
        ("", Net), ("A", MLP), ("A.fc2", nn.Linear)]
    assert leaf.module_path == "A.fc2"
    assert leaf.path == ("A", "fc2", "bias")


def test_kind_shape_dtype_and_trainable_come_from_the_tensors():
    net = Net()
    net.head.bias.requires_grad_(False)
    view = fl.view(net)
    assert view["A.fc1.weight"].kind == "param"
    assert view["A.fc1.weight"].shape == (8, 4)
    assert view["A.fc1.weight"].dtype == "float32"
    assert view["head.bias"].trainable is False
    assert view["head.weight"].trainable is True
    counter = view["bn.num_batches_tracked"]
    assert (counter.kind, counter.dtype, counter.trainable) == ("buffer", "int64", None)


def test_a_module_reachable_by_two_paths_gives_tied_leaves():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    view = fl.view(net)
    assert list(view.names) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert view["2.weight"].tied_to == ("0.weight",)
    assert view["0.bias"].tied_to == ("2.bias",)
    assert view.canonical["2.bias"] == "0.bias"


def test_a_shared_parameter_is_tied_across_modules():
    emb = nn.Embedding(10, 4)
    out = nn.Linear(4, 10, bias=False)
    out.weight = emb.weight
    view = fl.view(nn.ModuleDict({"emb": emb, "out": out}))
    assert view["out.weight"].tied_to == ("emb.weight",)
    assert view["emb.weight"].tied_to == ("out.weight",)


def test_selectors_see_torch_classes_and_their_bases():
    class MyNorm(nn.LayerNorm):
        pass

    net = nn.Sequential(nn.Linear(2, 2), MyNorm(2), nn.LayerNorm(2))
    mask = fl.mask(net, fl.Plan().freeze("type:LayerNorm"))
    assert mask.frozen_names() == ["1.weight", "1.bias", "2.weight", "2.bias"]
    mask = fl.mask(net, fl.Plan().freeze(fl.module_type(nn.LayerNorm) & fl.class_name("MyNorm")))
    assert mask.frozen_names() == ["1.weight", "1.bias"]


def test_view_lists_every_module_path():
    view = fl.view(Net())
    assert set(view.all_module_paths) >= {"", "A", "A.fc1", "A.fc2", "bn", "head"}
