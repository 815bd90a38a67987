"""torchvision classification models: layer groups laid out as timm lays out the same families.

- ResNet (and ResNeXt, Wide ResNet): ``stem`` (conv1, bn1), ``layer1``..``layer4``, ``head`` (fc).
- ConvNeXt and Swin (v1, v2): ``stem`` (features.0), then one group per stage with the
  downsampling layer that opens it (``stage1`` = features.1, ``stage2`` = features.2-3, ...), then
  ``head`` (final norm and classifier).
- EfficientNet (v1, v2), MobileNet v2/v3: ``stem`` (features.0), one group per stage
  (features.1 ...; the last 1x1 conv joins the last stage), ``head`` (the classifier).
- VisionTransformer: ``stem`` (class token, patch projection, position embedding), each encoder
  layer (the final LayerNorm joins the last), ``head`` (the classifier).

ResNet, ConvNeXt, Swin, ViT and EfficientNet groups hold the same number of parameters, group by
group, as timm's groups of the same architecture (coarse for the CNNs).

Example:
    >>> import torchvision, frostline as fl
    >>> fl.groups(torchvision.models.resnet18()).names
    ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head']
"""

from __future__ import annotations

import sys
from typing import Any

from ..core.grouping import groups_from_prefixes
from ..core.groups import Groups
from ..core.leaves import TreeView

SOURCE = "torchvision rule"


def groups(model: Any, view: TreeView, **options: Any) -> Groups | None:
    """The groups of a torchvision ResNet, ConvNeXt, Swin, EfficientNet, MobileNet or ViT.

    Returns None for any other model.
    """
    if "torchvision" not in sys.modules:
        return None
    from torchvision import models as tv

    if isinstance(model, tv.ResNet):
        prefixes = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"], ["fc"]]
        names = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
        return _found(view, model, prefixes, names)
    if isinstance(model, (tv.ConvNeXt, tv.SwinTransformer)):
        last = len(model.features) - 1
        stages = [[f"features.{i - 1}", f"features.{i}"] for i in range(3, last + 1, 2)]
        head = ["norm", "head"] if isinstance(model, tv.SwinTransformer) else ["classifier"]
        prefixes = [["features.0"], ["features.1"], *stages, head]
        names = ["stem", *[f"stage{i}" for i in range(1, len(stages) + 2)], "head"]
        return _found(view, model, prefixes, names)
    if isinstance(model, (tv.EfficientNet, tv.MobileNetV2, tv.MobileNetV3)):
        last = len(model.features) - 1
        prefixes = [["features.0"], *[[f"features.{i}"] for i in range(1, last - 1)],
                    [f"features.{last - 1}", f"features.{last}"], ["classifier"]]
        names = ["stem", *[f"features.{i}" for i in range(1, last)], "head"]
        return _found(view, model, prefixes, names)
    if isinstance(model, tv.VisionTransformer):
        layers = [f"encoder.layers.{name}" for name, _ in model.encoder.layers.named_children()]
        prefixes = [["class_token", "conv_proj", "encoder.pos_embedding"],
                    *[[layer] for layer in layers[:-1]], [layers[-1], "encoder.ln"], ["heads"]]
        return _found(view, model, prefixes, ["stem", *layers, "head"])
    return None


def _found(view: TreeView, model: Any, prefixes: list[list[str]], names: list[str]) -> Groups:
    note = f"torchvision {type(model).__name__}: " + ", ".join(names[:3]) + (
        f", ... {names[-1]}" if len(names) > 3 else "")
    return groups_from_prefixes(view, prefixes, names, SOURCE, [note])
