"""Small real models shared by the PyTorch tests (timm architectures at tiny sizes)."""

from __future__ import annotations

import timm
import torch
from torch import nn


def tiny_vit(depth: int = 3) -> nn.Module:
    """A timm ViT on 32x32 images with ``depth`` blocks (seeded)."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                             depth=depth, embed_dim=32, num_heads=2, num_classes=3)


def tiny_resnet() -> nn.Module:
    """timm's resnet10t with 3 classes (seeded): BatchNorm throughout."""
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=3)
