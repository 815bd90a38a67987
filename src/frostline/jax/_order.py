"""The order of dict keys in JAX models, independent of the order a dict happens to have.

A dict does not keep the order its model defined it in: ``jax.jit``, ``tree_map``, an optax
step and an orbax restore all return dicts with **sorted** keys (``Dense_0, Dense_1, Dense_10,
..., Dense_2``). So frostline never reads insertion order; it orders the keys of every dict by

1. role: known input names (``embedding``, ``cls``, ``pos_embedding``, ``stem``, ...) first,
   known output names (``head``, ``pre_logits``, ``encoder_norm``, ``classifier``, ...) last,
   everything else between;
2. family: keys that differ only by a number (``Dense_2``, ``encoderblock_10``, ``layers_3``,
   ``"7"``) are one family, ordered by that number (``Dense_2`` before ``Dense_10``).

Two keys of one role in different families (``Conv_0`` and ``Dense_0``, Linen's per-class
counters) have no knowable order. :func:`check_known_order` refuses groups that would depend on
it, and asks for an explicit ``spec=``.

Example:
    >>> sorted(["Dense_10", "head", "Dense_2", "embedding"], key=key_rank)
    ['embedding', 'Dense_2', 'Dense_10', 'head']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from .._errors import GroupError
from ..core.groups import Groups
from ..core.leaves import TreeView

INPUT, BODY, OUTPUT = 0, 1, 2

_NUMBERED = re.compile(r"^(.*?)_?(\d+)$")
# Linen names submodules ``ClassName_<counter>`` unless the code names them.
_LINEN_AUTO_NAME = re.compile(r"^([A-Z][A-Za-z0-9]*?)_(\d+)$")

_INPUT_NAMES = frozenset({
    "embed", "embedding", "embeddings", "embedder", "patch_embed", "patch_embedding",
    "pos_embed", "pos_embedding", "posembed_input", "position_embedding",
    "position_embeddings", "positional_embedding", "cls", "cls_token", "class_embedding",
    "token_embedder", "token_embedding", "tok_embeddings", "wte", "wpe", "stem", "conv_stem",
    "conv_root", "root", "input", "input_layer",
})
_OUTPUT_NAMES = frozenset({
    "head", "heads", "classifier", "logits", "pre_logits", "lm_head", "maphead",
    "encoder_norm", "decoder_norm", "final_norm", "final_layer_norm", "ln_f", "norm_f",
    "post_layernorm", "fc_norm", "pooler", "output_projection", "out", "output", "fc", "norm",
})


def split_number(key: str) -> tuple[str, int | None]:
    """``"Dense_10"`` -> ``("Dense", 10)``; ``"7"`` -> ``("", 7)``; ``"head"`` -> ``("head", None)``."""
    found = _NUMBERED.match(key)
    if found is None:
        return key, None
    return found.group(1), int(found.group(2))


def linen_class_name(key: str) -> str | None:
    """The class of a Linen submodule from its automatic name (``BatchNorm_0`` -> BatchNorm)."""
    found = _LINEN_AUTO_NAME.match(key)
    return found.group(1) if found else None


def role(key: str) -> int:
    """:data:`INPUT`, :data:`BODY` or :data:`OUTPUT` for one dict key."""
    base = split_number(key)[0].lower()
    if key.lower() in _INPUT_NAMES or base in _INPUT_NAMES:
        return INPUT
    if key.lower() in _OUTPUT_NAMES or base in _OUTPUT_NAMES:
        return OUTPUT
    return BODY


@lru_cache(maxsize=4096)
def key_rank(key: object) -> tuple[int, str, int, str]:
    """The sort key of one dict key: role, family, number, then the key itself."""
    text = str(key)
    family, number = split_number(text)
    return role(text), family, -1 if number is None else number, text


def _order_class(key: str) -> tuple[int, str, bool]:
    """Keys of one order class have a known order between them: one numbered family."""
    family, number = split_number(key)
    return role(key), family if number is not None else key, number is not None


def check_known_order(dict_paths: Iterable[str], groups: Groups, view: TreeView) -> None:
    """Refuse ``groups`` when they depend on an order of dict keys that no one can know.

    Args:
        dict_paths: dotted paths of every dict in the model ("" for a root dict).
        groups: the automatic groups, built in :func:`key_rank` order.
        view: the model's tree view.

    Raises:
        GroupError: two keys of one dict, of one role and different families, hold leaves
            of different groups (which of them runs first decides the groups).
    """
    dicts = set(dict_paths)
    under: dict[str, dict[str, set[int]]] = {}
    for leaf in view:
        index = groups.index_of(leaf.name)
        if index is None:
            continue
        for depth in range(len(leaf.path)):
            parent = ".".join(leaf.path[:depth])
            if parent in dicts:
                under.setdefault(parent, {}).setdefault(leaf.path[depth], set()).add(index)
    for path, keys in under.items():
        by_role: dict[int, dict[tuple[str, bool], list[str]]] = {}
        for key in sorted(keys, key=key_rank):
            cls = _order_class(key)
            by_role.setdefault(cls[0], {}).setdefault(cls[1:], []).append(key)
        for classes in by_role.values():
            spread = {g for found in classes.values() for k in found for g in keys[k]}
            if len(classes) > 1 and len(spread) > 1:
                raise GroupError(_unknown_order_message(path, classes))


def _unknown_order_message(path: str, classes: Mapping[tuple[str, bool], list[str]]) -> str:
    where = f"'{path}'" if path else "the root dict"
    kinds = ", ".join(f"{family}_*" if numbered else family
                      for family, numbered in classes)
    prefix = f"{path}." if path else ""
    example = ", ".join(f"'{prefix}{k}'" for found in classes.values() for k in found[:2])
    return (
        f"the layer order inside {where} cannot be known: its keys ({kinds}) have no order "
        "that survives jit, optax or orbax (JAX returns dicts with sorted keys), so automatic "
        "groups could put the wrong layers on top. Pass the groups explicitly, input first: "
        f"spec=[...] with one selector per group (e.g. {example}, in the order the model "
        "runs them)."
    )
