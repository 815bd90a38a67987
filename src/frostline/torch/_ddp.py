"""Checking that a DistributedDataParallel wrapper still agrees with ``requires_grad``.

DDP decides which parameters it synchronises when it is built. Freezing a parameter by hand
afterwards makes DDP wait for a gradient that never comes (an error on the next step); thawing
one makes its gradient stay local, so the ranks drift apart without any error.
"""

from __future__ import annotations

from typing import Any

from .._errors import BackendError, PlanError


def check_ddp(model: Any) -> None:
    """Raise if ``requires_grad`` changed since ``model`` was wrapped in DDP.

    DDP records how many parameter tensors (and bytes) it synchronises; this compares that
    record with the parameters that require gradients now (so freezing one tensor and thawing
    another of exactly the same size at once goes unnoticed). Call it after changing what
    trains, before the next step.

    Args:
        model: a ``torch.nn.parallel.DistributedDataParallel`` model.

    Raises:
        PlanError: the trainable set changed after wrapping (the message says how).
        BackendError: ``model`` is not wrapped in DDP, or this PyTorch does not expose DDP's
            record.

    Example (inside an initialised process group)::

        fl.lock(net, unlocked_groups=2)
        ddp = DistributedDataParallel(net)
        net.head.bias.requires_grad_(False)   # by hand, after wrapping
        fl.check_ddp(ddp)                     # PlanError: DDP synchronises 6 tensors, 5 now
    """
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        raise BackendError(
            f"check_ddp expects a DistributedDataParallel model, got {type(model).__qualname__}."
        )
    try:
        # DDP keeps no public list of what it synchronises; its logging record has the counts.
        record = model._get_ddp_logging_data()
        synced_count = int(record["num_parameter_tensors"])
        synced_bytes = int(record["total_parameter_size_bytes"])
        ignored = model.parameters_to_ignore
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BackendError(
            f"this version of PyTorch does not say what DDP synchronises ({exc!r}); "
            "check_ddp cannot compare it with requires_grad."
        ) from None
    seen: set[int] = set()
    count = size = 0
    for name, param in model.module.named_parameters():
        if not param.requires_grad or name in ignored or id(param) in seen:
            continue
        seen.add(id(param))
        count += 1
        size += param.numel() * param.element_size()
    if (count, size) != (synced_count, synced_bytes):
        raise PlanError(
            f"requires_grad changed after the model was wrapped in DistributedDataParallel: DDP "
            f"synchronises {synced_count} parameter tensors ({synced_bytes} bytes), but "
            f"{count} ({size} bytes) require gradients now. DDP fixes its trainable set when it "
            "is built (a newly frozen parameter stalls the reducer; a newly thawed one trains "
            "on each rank apart). Freeze the bare model (fl.lock / plan.apply) before wrapping, "
            "or wrap it again."
        )
