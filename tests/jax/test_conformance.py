"""One plan, one architecture, several frameworks: PyTorch, Equinox, Flax NNX and Linen agree."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax_models import BnBlocks, NnxNet, arrays_by_name, batch, eqx_net

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


# --- BatchNorm: train_bn with freeze_bn_stats, the two flags independent ---------------------

BN_PLAN = fl.Plan.lock(1).with_bn(train_bn=True, freeze_bn_stats=True)


class TorchBnBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.bn = nn.BatchNorm1d(width)

    def forward(self, x):
        return self.bn(torch.relu(self.lin(x)))


class TorchBnNet(nn.Module):
    """The PyTorch twin of ``NnxNet`` / ``BnBlocks``: stem, three Linear+BatchNorm blocks, head."""

    def __init__(self, width: int = 4, depth: int = 3):
        super().__init__()
        self.stem = nn.Linear(3, width)
        self.blocks = nn.ModuleList([TorchBnBlock(width) for _ in range(depth)])
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def moved(before: dict, after: dict) -> set[str]:
    return {n for n in before if not np.array_equal(before[n], after[n])}


def train_torch():
    model = TorchBnNet()
    fl.apply(model, BN_PLAN)
    model.train()
    before = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = (torch.tensor(np.asarray(a)) for a in batch())
    for _ in range(3):
        opt.zero_grad()
        torch.mean((model(x) - y) ** 2).backward()
        opt.step()
    after = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return moved(before, after), set(before)


def train_equinox():
    model, state = eqx.nn.make_with_state(BnBlocks)(key=jax.random.key(0))
    model = fl.apply(model, BN_PLAN)
    trainable, frozen = fl.partition(model, BN_PLAN)
    tx = optax.adamw(1e-2)
    opt_state = tx.init(trainable)
    x, y = batch()

    def loss(t, state):
        out, state = jax.vmap(fl.combine(t, frozen), axis_name="batch", in_axes=(0, None),
                              out_axes=(0, None))(x, state)
        return jnp.mean((out - y) ** 2), state

    stats = {f"blocks.{i}.bn.{k}": v for i, b in enumerate(model.blocks)
             for k, v in zip(("running_mean", "running_var"), state.get(b.bn.batch_state_index))}
    before = {**arrays_by_name(model), **{k: np.asarray(v) for k, v in stats.items()}}
    for _ in range(3):
        (_, state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(trainable, state)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = eqx.apply_updates(trainable, updates)
    model = fl.combine(trainable, frozen)
    stats = {f"blocks.{i}.bn.{k}": v for i, b in enumerate(model.blocks)
             for k, v in zip(("running_mean", "running_var"), state.get(b.bn.batch_state_index))}
    after = {**arrays_by_name(model), **{k: np.asarray(v) for k, v in stats.items()}}
    return moved(before, after), set(before)


def train_nnx():
    model = NnxNet()
    fl.apply(model, BN_PLAN)
    wrt = fl.nnx_filter(model, BN_PLAN)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=wrt)
    x, y = batch()
    before = {n: np.asarray(v) for n, v in nnx_arrays(model).items()}
    for _ in range(3):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2),
                         argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)
    after = {n: np.asarray(v) for n, v in nnx_arrays(model).items()}
    rename = {"scale": "weight", "kernel": "weight", "mean": "running_mean",
              "var": "running_var"}

    def torch_name(name: str) -> str:
        *head, last = name.split(".")
        return ".".join([*head, rename.get(last, last)])

    return {torch_name(n) for n in moved(before, after)}, {torch_name(n) for n in before}


def nnx_arrays(model) -> dict:
    return {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model))
            if hasattr(v.get_value(), "shape")}


@pytest.mark.parametrize("train", [train_torch, train_equinox, train_nnx],
                         ids=["torch", "equinox", "nnx"])
def test_train_bn_with_fixed_statistics_trains_affine_and_keeps_statistics(train):
    moved_names, names = train()
    affine = {f"blocks.{i}.bn.{k}" for i in range(3) for k in ("weight", "bias")}
    stats = {f"blocks.{i}.bn.{k}" for i in range(3) for k in ("running_mean", "running_var")}
    assert affine | {"head.weight", "head.bias"} <= moved_names
    assert not moved_names & stats
    assert stats <= names
    assert moved_names <= affine | {"head.weight", "head.bias"}


# --- Linen params after a jitted step: the same layers as a PyTorch Sequential ---------------


@pytest.fixture(scope="module")
def linen_after_step():
    from linen_models import Deep, after_jitted_step, init

    x = jnp.ones((2, 3))
    return after_jitted_step(Deep(), init(Deep(), x), x)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_lock_on_linen_params_after_a_jitted_step_matches_pytorch(linen_after_step, k):
    torch_net = nn.Sequential(*[nn.Linear(4, 4) for _ in range(13)])
    fl.lock(torch_net, k)
    torch_layers = {int(n.split(".")[0]) for n, p in torch_net.named_parameters()
                    if p.requires_grad}
    linen = fl.mask(linen_after_step, fl.Plan.lock(k)).trainable_names()
    assert {int(n.split(".")[1].split("_")[1]) for n in linen} == torch_layers == set(
        range(13 - k, 13))


# --- gradual unfreezing with layer decay: PyTorch Unfreezer and NNX thaw agree --------------


def test_nnx_gradual_unfreezing_with_layer_decay_matches_the_pytorch_unfreezer():
    schedule = fl.UnfreezeSchedule.gradual(every=1, start=1)
    torch_net = TorchBnNet()
    unfreezer = fl.Unfreezer(torch_net, schedule, lr=0.1, layer_decay=0.5)
    torch_opt = torch.optim.AdamW(unfreezer.param_groups(), lr=0.1)
    model = NnxNet()
    n = len(fl.groups(model))
    assert n == len(fl.groups(torch_net)) == 5
    tx = fl.layer_decay(model, optax.adamw, lr=0.1, decay=0.5)
    labels, scales = fl.layer_decay_labels(model, 0.5)
    optimizer = nnx.Optimizer(model, tx, wrt=fl.nnx_filter(model, schedule.plan_at(0, n)))
    rename = {"scale": "weight", "kernel": "weight"}

    def torch_name(name: str) -> str:
        *head, last = name.split(".")
        return ".".join([*head, rename.get(last, last)])

    names = dict(torch_net.named_parameters())
    for epoch in range(4):
        if epoch:
            unfreezer.step(epoch, torch_opt)
            optimizer = fl.thaw(model, schedule.plan_at(epoch, n), optimizer)
        torch_lr = {name: group["lr"] for group in torch_opt.param_groups
                    for name, p in names.items() if any(p is q for q in group["params"])}
        nnx_lr = {torch_name(name): 0.1 * scales[labels.as_dict()[name]]
                  for name in optimizer.wrt.names}
        assert set(nnx_lr) == set(torch_lr) == {n for n, p in names.items() if p.requires_grad}
        assert all(np.isclose(nnx_lr[name], torch_lr[name]) for name in nnx_lr)


# --- trainable-only checkpoints: one format, the same names ---------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_checkpoints_store_the_same_names_in_one_format(tmp_path, k):
    from safetensors import safe_open

    torch_net, eqx_model = Net(), eqx_net()
    fl.lock(torch_net, k)
    torch_info = fl.save_trainable(torch_net, tmp_path / "torch.safetensors")
    eqx_info = fl.save_trainable(eqx_model, tmp_path / "eqx.safetensors", fl.Plan.lock(k))
    assert torch_info.tensors == eqx_info.tensors
    assert torch_info.trainable == eqx_info.trainable
    metas = []
    for name in ("torch", "eqx"):
        with safe_open(tmp_path / f"{name}.safetensors", framework="numpy") as handle:
            metas.append(handle.metadata())
    assert set(metas[0]) == set(metas[1])
    assert metas[0]["frostline.format"] == metas[1]["frostline.format"]
    restored = fl.load_trainable(eqx_net(), tmp_path / "eqx.safetensors")
    assert sorted(arrays_by_name(fl.partition(restored, fl.Plan.lock(k))[0])) == sorted(
        eqx_info.trainable)
