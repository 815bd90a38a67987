"""Spreading a sweep over the processes of a ``torch.distributed`` job (``torchrun``).

Settings are independent: setting ``i`` runs on rank ``i % world_size`` (its model, optimizer
and cached features on that process), and every rank gathers every row, so each rank returns
the same result a single process would (times aside). Successive halving gathers the scores of
each rung on every rank and prunes the same runs everywhere. Each process builds the feature
cache once for itself.
"""

from __future__ import annotations

from typing import Any


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the running process group, or ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def mine(index: int) -> bool:
    """Whether this process runs item ``index``."""
    rank, size = world()
    return index % size == rank


def gather(local: dict[Any, Any]) -> dict[Any, Any]:
    """Every rank's ``local`` entries, merged, on every rank."""
    rank, size = world()
    if size == 1:
        return dict(local)
    import torch.distributed as dist

    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, local)
    merged: dict[Any, Any] = {}
    for part in parts:
        merged.update(part)
    return merged
