"""OpenCLIP: layer groups that reproduce OpenCLIP 3.3.0's own ``lock`` exactly, and go further.

What OpenCLIP 3.3.0 does, and what frostline does with it:

- ``VisionTransformer.lock``: groups ``[conv1, class_embedding, positional_embedding, ln_pre]``,
  each block but the last, ``[last block, ln_post]``, ``[proj]``; everything else of the tower
  (attention poolers) stays frozen whatever ``k``. frostline uses the same groups.
- ``TimmModel.lock``: the timm trunk's ``group_matcher()`` groups; the projection head outside the
  trunk stays trainable even at ``k=0``. frostline freezes within the trunk only (``Groups.scope``
  is ``trunk``); ``head_group=True`` instead makes the head the top group (as newer OpenCLIP
  does), so ``k=0`` freezes it too.
- ``ModifiedResNet.lock`` (RN50 ...) refuses any partial lock (an ``assert``). frostline groups it
  as ``stem`` (conv1..bn3), ``layer1``..``layer4``, ``attnpool``; BatchNorm statistics of the
  frozen groups (the stem's included) freeze with ``freeze_bn_stats``.
- ``lock_text_tower`` (native text transformer): ``[token_embedding, positional_embedding,
  cls_emb]``, each block but the last, ``[last block, ln_final]``, ``[text_projection]``.
- ``HFTextEncoder.lock``: ``[embeddings]``, each encoder layer; OpenCLIP freezes the rest of the
  transformer (pooler) at ``k=0`` only, so frostline puts it in the top group, which gives the
  same result for every ``k``. The projection outside the transformer is never frozen.

OpenCLIP's bugs are not copied: with ``k`` larger than the number of groups frostline raises a
:class:`~frostline.GroupError` stating the count (``TimmModel.lock`` would freeze every
BatchNorm's statistics, ``lock_text_tower`` silently unlocks everything), and fixing BatchNorm
statistics keeps the module (timm's ``BatchNormAct2d`` keeps its fused activation, where
OpenCLIP's ``FrozenBatchNorm2d`` drops it).

Example:
    >>> import open_clip, frostline as fl
    >>> cfg = dict(layers=2, width=32, patch_size=8, image_size=16, head_width=16)
    >>> tcfg = dict(layers=2, width=32, heads=2, context_length=8, vocab_size=64)
    >>> clip = open_clip.CLIP(16, cfg, tcfg)
    >>> fl.groups(clip, tower="image").names
    ['visual.stem', 'visual.transformer.resblocks.0', 'visual.transformer.resblocks.1', 'visual.proj']
    >>> print(fl.lock(clip, 1, tower="image"))
    Plan(freeze **, unfreeze group:-1:; unlocked_groups=1, groups(tower='image'), scope visual)
"""

from __future__ import annotations

import sys
from typing import Any

from ..core.grouping import build_groups, groups_from_prefixes
from ..core.groups import Groups
from ..core.leaves import TreeView

SOURCE = "open_clip rule"
_TEXT_PARTS = ("token_embedding", "positional_embedding", "cls_emb", "transformer", "ln_final",
               "text_projection")


def groups(model: Any, view: TreeView, *, coarse: bool = False, head_group: bool = False,
           **options: Any) -> Groups | None:
    """The OpenCLIP groups of a tower or a whole CLIP, or None for other models.

    Args:
        model: an OpenCLIP ``VisionTransformer``, ``TimmModel``, ``ModifiedResNet``,
            ``TextTransformer``, ``HFTextEncoder``, ``CLIP`` or ``CustomTextCLIP``.
        view: its tree view.
        coarse: timm towers: the trunk's coarse groups (OpenCLIP itself uses the fine ones).
        head_group: timm towers: the projection head as the top group (newer OpenCLIP).

    Returns:
        The groups; a whole CLIP gets the image tower's, then the text tower's, then the rest
        (``logit_scale``) as one group. Use ``tower=`` to lock one tower as OpenCLIP does.
    """
    if "open_clip" not in sys.modules:
        return None
    from open_clip.hf_model import HFTextEncoder
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import TextTransformer, VisionTransformer

    if isinstance(model, VisionTransformer):
        return _vit_groups(model, view)
    if isinstance(model, TimmModel):
        return _timm_tower_groups(model, view, coarse=coarse, head_group=head_group, **options)
    if isinstance(model, ModifiedResNet):
        return _resnet_groups(view)
    if isinstance(model, TextTransformer):
        return _text_groups(model, view, "")
    if isinstance(model, HFTextEncoder):
        return _hf_text_groups(model, view)
    if isinstance(model, (CLIP, CustomTextCLIP)):
        return _clip_groups(model, view, coarse=coarse, head_group=head_group, **options)
    return None


def tower_groups(model: Any, view: TreeView, tower: str, **options: Any) -> Groups | None:
    """The groups of one tower of a CLIP (``"image"`` or ``"text"``), named from the root.

    ``Groups.scope`` is the tower, so ``fl.lock(clip, k, tower=...)`` leaves the other tower
    untouched, exactly as ``clip.lock_image_tower(k)`` / ``clip.lock_text_tower(k)``.
    """
    if "open_clip" not in sys.modules or tower not in ("image", "text"):
        return None
    from open_clip.model import CLIP, CustomTextCLIP

    if not isinstance(model, (CLIP, CustomTextCLIP)):
        return None
    from ..torch._groups import submodule_groups

    if tower == "image":
        return submodule_groups(model, view, "visual", **options)
    if isinstance(model, CustomTextCLIP):
        return submodule_groups(model, view, "text", **options)
    return _text_groups(model, view, "")


def _vit_groups(model: Any, view: TreeView) -> Groups:
    blocks = [f"transformer.resblocks.{i}" for i in range(len(model.transformer.resblocks))]
    prefixes = [["conv1", "class_embedding", "positional_embedding", "ln_pre"],
                *[[b] for b in blocks[:-1]], [blocks[-1], "ln_post"], ["proj"]]
    names = ["stem", *blocks, "proj"]
    notes = ["open_clip VisionTransformer: the groups of its own lock(); parameters in no group "
             "(attention poolers) stay frozen whatever unlocked_groups, as in OpenCLIP"]
    return groups_from_prefixes(view, prefixes, names, SOURCE, notes)


def _timm_tower_groups(model: Any, view: TreeView, *, coarse: bool, head_group: bool,
                       **options: Any) -> Groups:
    from ..torch._groups import submodule_groups

    trunk = submodule_groups(model, view, "trunk", coarse=coarse, **options)
    source = f"{SOURCE} over {trunk.source}"
    note = f"open_clip TimmModel: the trunk's groups (coarse={coarse}); "
    rest = [leaf.name for leaf in view
            if view.canonical[leaf.name] == leaf.name and not leaf.name.startswith("trunk.")]
    members = [list(group.leaf_names) for group in trunk]
    names = list(trunk.names)
    if not head_group:
        note += ("the head outside the trunk stays trainable even at unlocked_groups=0, as in "
                 "OpenCLIP 3.3.0 (head_group=True makes it the top group)")
        return build_groups(view, members, names, source, [note, *trunk.notes],
                            trunk.unmatched, trunk.scope)
    if rest:
        members.append(rest)
        names.append("head")
    note += "the projection head is the top group (head_group=True)"
    return build_groups(view, members, names, source, [note, *trunk.notes], trunk.unmatched)


def _resnet_groups(view: TreeView) -> Groups:
    prefixes = [["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"],
                ["layer1"], ["layer2"], ["layer3"], ["layer4"], ["attnpool"]]
    names = ["stem", "layer1", "layer2", "layer3", "layer4", "attnpool"]
    notes = ["open_clip ModifiedResNet: stem, layer1..layer4, attnpool (OpenCLIP's own lock "
             "refuses partial locking of this tower)"]
    return groups_from_prefixes(view, prefixes, names, SOURCE, notes)


def _text_groups(model: Any, view: TreeView, prefix: str) -> Groups:
    """The groups of OpenCLIP's ``lock_text_tower`` for the text parts held by ``model``."""
    present = [part for part in _TEXT_PARTS if getattr(model, part, None) is not None]
    blocks = [f"transformer.resblocks.{i}" for i in range(len(model.transformer.resblocks))]
    prefixes = [["token_embedding", "positional_embedding", "cls_emb"],
                *[[b] for b in blocks[:-1]], [blocks[-1], "ln_final"], ["text_projection"]]
    names = ["embeddings", *blocks, "text_projection"]
    prefixes = [[prefix + p for p in group] for group in prefixes]
    names = [prefix + n for n in names]
    notes = ["open_clip text transformer: the groups of lock_text_tower(); only the text "
             f"parts ({', '.join(present)}) are frozen, logit_scale and the image tower are not"]
    return groups_from_prefixes(view, prefixes, names, SOURCE, notes,
                                scope=[prefix + p for p in present])


def _hf_text_groups(model: Any, view: TreeView) -> Groups:
    from open_clip.hf_configs import arch_dict

    config_names = arch_dict[model.config.model_type]["config_names"]
    transformer = model.transformer
    encoder = "transformer.encoder" if hasattr(transformer, "encoder") else "transformer"
    layer_attr = config_names["layer_attr"]
    count = len(getattr(transformer.encoder if hasattr(transformer, "encoder") else transformer,
                        layer_attr))
    layers = [f"{encoder}.{layer_attr}.{i}" for i in range(count)]
    embeddings = "transformer." + config_names["token_embeddings_attr"]
    prefixes = [[embeddings], *[[layer] for layer in layers[:-1]], [layers[-1], "transformer"]]
    names = ["embeddings", *layers]
    notes = ["open_clip HFTextEncoder: the groups of its lock(); the rest of the transformer "
             "(pooler) is in the top group (OpenCLIP freezes it at unlocked_groups=0 only); "
             "the projection outside the transformer is never frozen"]
    return groups_from_prefixes(view, prefixes, names, SOURCE, notes, scope=["transformer"])


def _clip_groups(model: Any, view: TreeView, **options: Any) -> Groups:
    image = tower_groups(model, view, "image", **options)
    text = tower_groups(model, view, "text", **options)
    members = [list(g.leaf_names) for g in (*image, *text)]
    placed = {name for group in members for name in group}
    rest = [leaf.name for leaf in view
            if leaf.name not in placed and view.canonical[leaf.name] == leaf.name]
    names = [*image.names, *text.names]
    if rest:
        members.append(rest)
        names.append("rest")
    notes = [f"open_clip {type(model).__name__}: the image tower's {len(image)} groups, then the "
             f"text tower's {len(text)}" + (", then the rest (logit_scale ...)" if rest else "")
             + "; pass tower='image' or tower='text' to lock one tower as OpenCLIP does",
             *image.notes, *text.notes]
    return build_groups(view, members, names, SOURCE, notes)
