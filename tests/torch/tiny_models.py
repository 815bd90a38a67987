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


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x):
        return self.norm(x + torch.relu(self.fc(x)))


class HandWritten(nn.Module):
    """No group_matcher: groups come from automatic detection."""

    def __init__(self, depth: int = 4, width: int = 8):
        super().__init__()
        self.embed = nn.Linear(3, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)
