"""The demo network: a small convolutional network with BatchNorm for 8x8 digit images.

It is an ``nn.Sequential`` whose top-level children are its five layer groups (``stem``,
``block1``, ``block2``, ``block3``, ``head``), so the sweep can cache the frozen prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from importlib import resources

from torch import nn

WEIGHTS = "demo_source.safetensors"
SOURCE_CLASSES = 5


class ConvBlock(nn.Sequential):
    """3x3 convolution, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class Head(nn.Sequential):
    """Global average pooling and a linear classifier."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def digit_net(num_classes: int = SOURCE_CLASSES) -> nn.Sequential:
    """A freshly initialised demo network (input: ``(N, 1, 8, 8)`` images in [0, 1]).

    Example:
        >>> import torch, frostline as fl
        >>> fl.groups(digit_net()).names
        ['stem', 'block1', 'block2', 'block3', 'head']
        >>> tuple(digit_net(3)(torch.zeros(2, 1, 8, 8)).shape)
        (2, 3)
    """
    return nn.Sequential(OrderedDict(
        stem=ConvBlock(1, 16),
        block1=ConvBlock(16, 32),
        block2=ConvBlock(32, 64, stride=2),
        block3=ConvBlock(64, 64),
        head=Head(64, num_classes),
    ))


def pretrained_digit_net() -> nn.Sequential:
    """The demo network with the shipped source weights (trained on digits 0-4).

    The weights are ``frostline/data/demo_source.safetensors``, made by
    ``scripts/train_demo_source.py``.
    """
    from safetensors.torch import load

    model = digit_net()
    blob = resources.files("frostline").joinpath("data", WEIGHTS).read_bytes()
    model.load_state_dict(load(blob))
    return model


def reset_head(model: nn.Sequential, num_classes: int) -> nn.Sequential:
    """Replace the classifier with a freshly initialised one (uses the global torch seed)."""
    model.head = Head(model.head[-1].in_features, num_classes)
    return model


__all__ = ["ConvBlock", "Head", "digit_net", "pretrained_digit_net", "reset_head"]
