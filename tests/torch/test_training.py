"""Real training steps prove it: frozen tensors and BN statistics stay bit-identical."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import frostline as fl
from frostline.torch import stats_frozen

OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9,
                                                   weight_decay=1e-3),
    "adamw_decay": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
}


def train_and_check(model, loss_fn, make_optimizer, steps=3):
    """Run ``steps`` optimizer steps over *all* parameters, then prove the freezing held.

    The optimizer is given every parameter, frozen ones included, so the test also shows that
    momentum and weight decay never reach a tensor whose ``requires_grad`` is False.
    """
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    before = {n: t.detach().clone() for n, t in {**params, **buffers}.items()}
    frozen_bn = {p for p, m in model.named_modules() if stats_frozen(m)}
    live_bn = {p for p, m in model.named_modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and p not in frozen_bn}
    optimizer = make_optimizer(model.parameters())
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model).backward()
        optimizer.step()
    frozen = [n for n, p in params.items() if not p.requires_grad]
    trainable = [n for n, p in params.items() if p.requires_grad]
    assert frozen and trainable
    for name in frozen:
        assert torch.equal(params[name], before[name]), f"frozen {name} moved"
    for name in trainable:
        assert not torch.equal(params[name], before[name]), f"trainable {name} did not move"
    for path in frozen_bn:
        for stat in ("running_mean", "running_var", "num_batches_tracked"):
            name = f"{path}.{stat}"
            assert torch.equal(buffers[name], before[name]), f"frozen statistic {name} moved"
    for path in live_bn:
        name = f"{path}.running_mean"
        assert not torch.equal(buffers[name], before[name]), f"live statistic {name} is stuck"
    return frozen, trainable, frozen_bn


def classification_loss(images, labels):
    return lambda model: nn.functional.cross_entropy(model(images), labels)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_timm_resnet_lock_with_frozen_batchnorm(optimizer):
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    fl.lock(model, unlocked_groups=2, freeze_bn_stats=True)
    loss = classification_loss(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1]))
    frozen, trainable, frozen_bn = train_and_check(model, loss, optimizer)
    unlocked = {n for g in fl.groups(model).groups[-2:] for n in g.parameter_names}
    assert set(trainable) == unlocked
    assert "bn1" in frozen_bn and "conv1.1" in frozen_bn
    assert not any(path.startswith("layer4.") for path in frozen_bn)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_tiny_timm_vit_lock(optimizer):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, depth=3, embed_dim=32, num_heads=2, num_classes=3)
    fl.lock(model, unlocked_groups=2)
    loss = classification_loss(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1]))
    frozen, trainable, _ = train_and_check(model, loss, optimizer)
    assert "patch_embed.proj.weight" in frozen and "blocks.0.attn.qkv.weight" in frozen
    assert "head.weight" in trainable and "blocks.2.mlp.fc2.weight" in trainable


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from safetensors.torch import load_file
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(minilm_path), local_files_only=True)
    stored = load_file(str(minilm_path / "model.safetensors"))
    key = next(k for k in stored if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(model.embeddings.word_embeddings.weight, stored[key])  # real weights
    return model


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_pretrained_minilm_lock(minilm, optimizer):
    import copy

    torch.manual_seed(0)
    model = copy.deepcopy(minilm)
    found = fl.groups(model)
    assert found.names == ["stem", *(f"encoder.layer.{i}" for i in range(6)), "head"]
    fl.lock(model, unlocked_groups=2)
    ids = torch.randint(1000, 2000, (2, 8))

    def loss(m):
        out = m(input_ids=ids, attention_mask=torch.ones_like(ids))
        return out.pooler_output.pow(2).mean() + out.last_hidden_state[:, 0].pow(2).mean()

    frozen, trainable, _ = train_and_check(model, loss, optimizer, steps=2)
    assert set(trainable) == set(found["encoder.layer.5"].parameter_names) | set(
        found["head"].parameter_names)
    assert "embeddings.word_embeddings.weight" in frozen


class MLP(nn.Module):
    def __init__(self, width: int = 6):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(width, width), nn.Linear(width, width)])

    def forward(self, x):
        return self.layers[1](torch.tanh(self.layers[0](x)))


class Model(nn.Module):
    """The Equinox guide's example, in PyTorch: a submodule ``A`` and a submodule ``B``."""

    def __init__(self):
        super().__init__()
        self.A = MLP()
        self.B = MLP()
        self.norm = nn.LayerNorm(6)

    def forward(self, x):
        return self.norm(self.B(self.A(x)))


HAND_PLANS = {
    "by_parameter_name": (fl.Plan().freeze(fl.name("bias")),
                          lambda n: n.endswith(".bias")),
    "by_module_name": (fl.Plan().freeze("name:A"), lambda n: n.startswith("A.")),
    "by_module_type": (fl.Plan().freeze(fl.module_type(nn.LayerNorm)),
                       lambda n: n.startswith("norm.")),
    "by_class_name": (fl.Plan().freeze("class:MLP & !name:weight"),
                      lambda n: n.startswith(("A.", "B.")) and n.endswith(".bias")),
    "by_group": (fl.Plan().freeze("**").unfreeze("group:-1:"),
                 lambda n: not n.startswith("norm.")),
    "by_predicate": (fl.Plan().freeze(fl.where(lambda leaf: leaf.shape == (6, 6), "square")),
                     lambda n: n.endswith(".weight") and not n.startswith("norm.")),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("plan, is_frozen", HAND_PLANS.values(), ids=HAND_PLANS.keys())
def test_hand_written_modules(plan, is_frozen, optimizer):
    torch.manual_seed(0)
    model = Model()
    fl.apply(model, plan)
    x, target = torch.randn(8, 6), torch.randn(8, 6)
    frozen, _, _ = train_and_check(model, lambda m: (m(x) - target).pow(2).mean(), optimizer)
    assert set(frozen) == {n for n, _ in model.named_parameters() if is_frozen(n)}
