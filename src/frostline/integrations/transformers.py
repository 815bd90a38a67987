"""Hugging Face transformers: embeddings first, each layer, final norm and head last.

A *stack* is a ``ModuleList`` of same-class layers (``encoder.layer``, ``model.layers``,
``transformer.h``, ``encoder.block`` ...). The groups, in definition order:

- the feature encoder of speech models (wav2vec2, HuBERT ...), alone: exactly what
  ``model.freeze_feature_encoder()`` freezes, so ``fl.lock(model, len(groups) - 1)`` matches it;
- ``stem``: the embeddings, everything before the first stack;
- one group per layer of the stack;
- between two stacks (encoder-decoder models: T5, Whisper; the two towers of CLIP), what belongs to
  the first stack's part (``encoder.final_layer_norm``) forms ``<part>.final`` and the rest
  (the decoder's embeddings) ``<part>.embeddings``; the encoder comes first, then the decoder;
- ``head``: everything after the last stack (final norm, pooler, LM or classification head).

Tied weights (GPT-2's ``lm_head`` and ``wte``, T5's ``shared`` and both ``embed_tokens``) are one
tensor: it lands in the group of its first name (the input embeddings), so locking never splits it.

Training with ``transformers.Trainer``: :class:`FrostlineCallback` (imported on first use from
``frostline.integrations._hf_trainer``, as it needs ``accelerate``).

Example:
    >>> import transformers, frostline as fl
    >>> cfg = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=2,
    ...                               num_attention_heads=2, intermediate_size=16)
    >>> fl.groups(transformers.BertModel(cfg)).names
    ['stem', 'encoder.layer.0', 'encoder.layer.1', 'head']
"""

from __future__ import annotations

import sys
from typing import Any

from ..core.grouping import build_groups
from ..core.groups import Groups
from ..core.leaves import TreeView

SOURCE = "transformers rule"
_FEATURE_ENCODERS = ("FeatureEncoder", "FeatureExtractor")
_CLIP_TOWERS = {"image": ("vision_model", "visual_projection"),
                "text": ("text_model", "text_projection")}


def __getattr__(name: str) -> Any:
    if name == "FrostlineCallback":
        from ._hf_trainer import FrostlineCallback

        return FrostlineCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def groups(model: Any, view: TreeView, **options: Any) -> Groups | None:
    """The groups of a transformers model (or of one of its modules), or None for other models."""
    if "transformers" not in sys.modules or not _is_transformers(model):
        return None
    from torch import nn

    feature = _feature_encoder(model)
    stacks = _stacks(model, nn.ModuleList, feature)
    if not stacks:
        return None
    return _stack_groups(view, model, stacks, feature)


def tower_groups(model: Any, view: TreeView, tower: str, **options: Any) -> Groups | None:
    """One tower of a transformers CLIP-style model: ``"image"`` or ``"text"`` with its projection.

    ``Groups.scope`` is the tower and its projection, so ``fl.lock(clip, k, tower="image")``
    leaves the text tower and ``logit_scale`` alone.
    """
    if "transformers" not in sys.modules or tower not in _CLIP_TOWERS or not _is_transformers(
            model):
        return None
    body, projection = _CLIP_TOWERS[tower]
    if getattr(model, body, None) is None or getattr(model, projection, None) is None:
        return None
    from ..torch._groups import submodule_groups

    inner = submodule_groups(model, view, body, **options)
    members = [list(group.leaf_names) for group in inner]
    members.append([leaf.name for leaf in view if leaf.name.startswith(projection + ".")])
    notes = (*inner.notes, f"the projection '{projection}' is the top group")
    return build_groups(view, members, [*inner.names, projection], SOURCE, notes,
                        inner.unmatched, scope=(body, projection))


def _is_transformers(model: Any) -> bool:
    return (type(model).__module__ or "").startswith("transformers.")


def _feature_encoder(model: Any) -> str | None:
    for path, module in model.named_modules():
        if path and type(module).__name__.endswith(_FEATURE_ENCODERS):
            return path
    return None


def _stacks(model: Any, module_list: type, feature: str | None) -> list[tuple[str, list[str]]]:
    """Maximal ``ModuleList``s of same-class layers that hold parameters, outside ``feature``."""
    found: list[tuple[str, list[str]]] = []
    for path, module in model.named_modules():
        if not isinstance(module, module_list) or not len(module):
            continue
        if feature is not None and _under(path, feature):
            continue
        if any(_under(path, block) for _, blocks in found for block in blocks):
            continue
        children = list(module.named_children())
        if len({type(child) for _, child in children}) != 1:
            continue
        if not all(any(True for _ in child.parameters()) for _, child in children):
            continue
        found.append((path, [f"{path}.{name}" for name, _ in children]))
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _block_of(name: str, block_index: dict[str, int]) -> tuple[int, str] | None:
    """(stack index, block path) of the first block on ``name``'s path, or None."""
    end = name.find(".")
    while end != -1:
        prefix = name[:end]
        if prefix in block_index:
            return block_index[prefix], prefix
        end = name.find(".", end + 1)
    return (block_index[name], name) if name in block_index else None


def _part(stack: str, other: str) -> str:
    """The module that holds ``stack`` but not ``other`` (``encoder`` for T5's two stacks)."""
    mine, theirs = stack.split("."), other.split(".")
    common = 0
    while common < min(len(mine), len(theirs)) and mine[common] == theirs[common]:
        common += 1
    return ".".join(mine[:common + 1])


def _stack_groups(view: TreeView, model: Any, stacks: list[tuple[str, list[str]]],
                  feature: str | None) -> Groups:
    parts = [_part(stacks[j][0], stacks[j + 1][0]) for j in range(len(stacks) - 1)]
    # The feature encoder comes first whatever the definition order (wav2vec2 defines
    # masked_spec_embed before it).
    keys: list[str] = [feature] if feature is not None else []
    members: dict[str, list[str]] = {key: [] for key in keys}

    def put(key: str, name: str) -> None:
        if key not in members:
            members[key] = []
            keys.append(key)
        members[key].append(name)

    # Block path -> stack index: a dictionary look-up per prefix keeps this linear in leaves.
    block_index = {b: j for j, (_, blocks) in enumerate(stacks) for b in blocks}
    current = -1
    for leaf in view:
        name = leaf.name
        if view.canonical[name] != name:
            continue  # aliases follow their canonical name (build_groups adds them)
        if feature is not None and _under(name, feature):
            put(feature, name)
            continue
        block = _block_of(name, block_index)
        if block is not None:
            current = block[0]
            put(block[1], name)
        elif current < 0:
            put("stem", name)
        elif current == len(stacks) - 1:
            put("head", name)
        elif _under(name, parts[current]):
            put(f"{parts[current]}.final", name)
        else:
            put(f"{_part(stacks[current + 1][0], stacks[current][0])}.embeddings", name)
    ordered = [key for key in keys if members[key]]
    layout = ", then ".join(f"{len(blocks)} x {path}" for path, blocks in stacks)
    notes = [f"transformers {type(model).__name__}: layer stacks {layout}, in definition order"]
    if feature is not None:
        notes.append(f"the feature encoder '{feature}' is group 0, as freeze_feature_encoder()")
    return build_groups(view, [members[k] for k in ordered], ordered, SOURCE, notes)
