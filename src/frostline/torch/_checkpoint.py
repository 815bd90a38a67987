"""Trainable-only checkpoints: save what was trained, load it back onto the same base model.

A checkpoint is a safetensors file (loading it runs no code). It holds the trainable parameters
and the running statistics of BatchNorms that still update; its metadata (JSON strings) holds
the plan, the trainable state, the base model's architecture (names, kinds, dtypes, shapes, ties)
and a digest of every frozen tensor, so a checkpoint is never loaded onto the wrong base.

Example:
    >>> import os, tempfile, torch, frostline as fl
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> _ = fl.lock(net, unlocked_groups=1)
    >>> path = os.path.join(tempfile.mkdtemp(), "head.safetensors")
    >>> fl.save_trainable(net, path).tensors
    ('1.weight', '1.bias')
    >>> fresh = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> fresh.load_state_dict({k: v for k, v in net.state_dict().items() if k.startswith("0.")},
    ...                       strict=False).missing_keys
    ['1.weight', '1.bias']
    >>> _ = fl.load_trainable(fresh, path)
    >>> torch.equal(fresh[1].weight, net[1].weight), fresh[0].weight.requires_grad
    (True, False)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .._errors import CheckpointError, FrostlineError
from ..core.checkpoint import (
    CheckpointInfo,
    architecture,
    canonical_names,
    check_architecture,
    check_digests,
    digest,
    few,
    metadata,
    read_file,
    write_atomic,
)
from ..core.groups import Grouping
from ..core.leaves import PARAM, TreeView
from ..core.mask import Mask
from ..core.norms import STAT_NAMES, is_batchnorm
from ..core.plan import Plan
from ..core.resolve import Resolved, resolve
from ._apply import PLAN_ATTRIBUTE, apply_mask
from ._view import named_tensors
from ._wrappers import unwrap


def save_trainable(model: nn.Module, path: str | os.PathLike[str], plan: Plan | None | bool = None,
                   grouping: Grouping | None = None) -> CheckpointInfo:
    """Write the trainable part of ``model`` to a safetensors file, atomically.

    Stored: every parameter with ``requires_grad`` (each shared tensor once) and the running
    statistics of BatchNorms whose statistics still update. Metadata: the plan (``plan``, else
    the plan last applied to the model, else none: ``plan=False`` stores none), the trainable
    state, and the base model's architecture plus a digest of every tensor not stored.

    The file is written to a temporary file in the same directory, flushed to disk, then
    renamed over ``path``: a crash leaves the previous file intact. It gets the permissions of
    an ordinary new file (the umask applies) or keeps those of the file it replaces; a path
    that is a symbolic link writes the file the link points to. A model sharded with FSDP2
    (DTensor parameters) is gathered: call this on every rank; rank 0 writes.

    Args:
        model: the model (``torch.compile``, DataParallel and DDP wrappers are looked through:
            the file holds the inner model's names and loads into the bare model).
        path: the file to write.
        plan: the plan to record; it must agree with the model's ``requires_grad``. When it is
            not given, the plan the model remembers is recorded if it still describes the
            model; if not (``requires_grad`` changed by hand since, other group options, a
            Python predicate selector) a warning says so and the file records the
            ``requires_grad`` state alone: the trained weights are never lost to an error.
        grouping: how groups were built when the plan was applied, where it differs from the
            plan's own grouping (:class:`~frostline.Grouping`).

    Returns:
        :class:`CheckpointInfo` with the stored tensor names.

    Raises:
        CheckpointError: the plan passed in disagrees with the model or cannot be stored
            (Python predicate selectors), or the model has tensors on the meta device.
    """
    resolved = resolve(_unwrap(model), grouping=grouping)
    model, view = resolved.model, resolved.view
    tensors = named_tensors(model)
    _refuse_meta(tensors)
    stored_names = _stored_names(model, view)
    trainable = _trainable_names(view)
    stats = sorted(view.frozen_stats)
    plan, plan_dict = _plan_to_store(resolved, plan, trainable, stats)
    payload = _payload(tensors, stored_names)
    stored = set(stored_names)
    base = {
        "architecture": architecture(view),
        "digests": {name: _digest(_full(tensors[name])) for name in canonical_names(view)
                    if name not in stored},
    }
    meta = metadata(plan_dict, trainable, stats, base)
    write = not (_is_sharded(tensors) and _rank() != 0)
    if write:
        _write_atomic(os.fspath(path), payload, meta)
    return CheckpointInfo(os.fspath(path), tuple(stored_names), plan, tuple(trainable),
                          written=write)


def load_trainable(model: nn.Module, path: str | os.PathLike[str], strict: bool = True, *,
                   check_base: bool = True, grouping: Grouping | None = None) -> CheckpointInfo:
    """Restore a checkpoint written by :func:`save_trainable` onto a freshly loaded base model.

    Everything is checked before the model is touched: the architecture and the frozen
    weights must be those the checkpoint was trained on (``check_base``), every stored tensor
    must fit, and the file may hold only what trains under its own plan (else its stored
    trainable state): trainable parameters and the running statistics of BatchNorms whose
    statistics are not fixed. A file that also holds a frozen tensor is refused, naming it, so
    loading never replaces a frozen base value. Then the stored tensors are copied in and the
    stored plan is re-applied, so ``requires_grad`` and frozen BatchNorm statistics are as they
    were when saving.

    The base check guards against accidents: the wrong base model, other pretrained weights,
    other frozen BatchNorm statistics, a re-quantised base. The digests are plain content
    hashes stored in the file itself, not a signature: someone who can edit the file can edit
    them too. Verify where a checkpoint comes from (a checksum or signature of the whole file
    from its source) when that matters.

    Args:
        model: the base model, unsharded (DDP and ``torch.compile`` wrappers are unwrapped).
        path: the checkpoint file.
        strict: every stored tensor must exist in the model, and the stored plan must give the
            stored trainable state on this model; with False, missing tensors are skipped
            (listed in ``skipped``).
        check_base: refuse a base whose architecture or frozen weights differ from the one the
            checkpoint was saved from. Pass False to load anyway (e.g. onto a re-quantised base).
        grouping: how groups were built when the plan was applied, where it differs from the
            plan's own grouping (:class:`~frostline.Grouping`).

    Returns:
        :class:`CheckpointInfo` with the loaded tensor names and the plan.

    Raises:
        CheckpointError: the file is not a frostline checkpoint, the base differs (the message
            names the tensors, shapes or dtypes that differ), a tensor does not fit, or the
            file holds tensors that are frozen under its plan (named in the message).
    """
    resolved = resolve(_unwrap(model), grouping=grouping)
    model, view = resolved.model, resolved.view
    path = os.fspath(path)
    payload, meta = _read(path)
    tensors = named_tensors(model)
    _refuse_meta(tensors)
    if _is_sharded(tensors):
        raise CheckpointError(
            "the model's parameters are sharded (DTensor); load the checkpoint onto the "
            "unsharded model, then call fully_shard."
        )
    if check_base:
        check_architecture(meta["base"]["architecture"], view, path)
        check_digests(meta["base"]["digests"],
                      lambda name: _digest(tensors[name]) if name in tensors else None, path)
    loaded, skipped = _match_tensors(payload, tensors, strict, path)
    plan = meta["plan"]
    mask = _mask_to_restore(resolved, plan, meta["state"], strict, path)
    _refuse_untrained(loaded, view, mask, path)
    with torch.no_grad():
        for name in loaded:
            tensors[name].copy_(payload[name])
    apply_mask(model, mask, plan)
    return CheckpointInfo(path, tuple(loaded), plan, tuple(mask.trainable_names()),
                          skipped=tuple(skipped))


# --- what is stored ------------------------------------------------------------------------------


def _unwrap(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise CheckpointError(
            f"trainable-only checkpoints are for torch.nn.Module models, got "
            f"{type(model).__qualname__}."
        )
    return unwrap(model)


def _trainable_names(view: TreeView) -> list[str]:
    return [leaf.name for leaf in view if leaf.kind == PARAM and leaf.trainable]


def _stored_names(model: nn.Module, view: TreeView) -> list[str]:
    """Canonical trainable parameters, plus the statistics of BatchNorms that still update."""
    return [name for name in canonical_names(view) if (
        view[name].kind == PARAM and view[name].trainable
    ) or (view[name].kind != PARAM and view[name].path[-1] in STAT_NAMES
          and view[name].owners and is_batchnorm(view[name].owners[-1])
          and view[name].module_path not in view.frozen_stats)]


def _plan_to_store(resolved: Resolved, plan: Plan | None | bool, trainable: list[str],
                   stats: list[str]) -> tuple[Plan | None, dict[str, Any] | None]:
    """The plan to record and its dict. A plan passed in must describe the model; the plan the
    model remembers may not any more (``requires_grad`` changed by hand, other group options):
    then the trained weights are still saved, with a warning, rather than lost to an error."""
    if plan is False:
        return None, None
    explicit = plan is not None
    if explicit and not isinstance(plan, Plan):
        raise CheckpointError(f"plan must be a frostline Plan, None or False, got {plan!r}.")
    plan = plan if explicit else getattr(resolved.model, PLAN_ATTRIBUTE, None)
    if plan is None:
        return None, None
    try:
        _check_plan_matches(resolved, plan, trainable, stats)
        return plan, plan.to_dict()
    except FrostlineError as exc:
        message = f"the plan cannot be stored with the checkpoint: {exc}"
        if explicit:
            raise CheckpointError(
                message + " Or pass plan=False to store the requires_grad state alone."
            ) from None
        warnings.warn(message + " The checkpoint records the requires_grad state without the "
                      "plan.", UserWarning, stacklevel=4)
        return None, None


def _check_plan_matches(resolved: Resolved, plan: Plan, trainable: list[str],
                        stats: list[str]) -> None:
    view = resolved.view
    mask = replace(resolved, plan=plan).mask
    expected = _effective_trainable(view, mask)
    differ = sorted(set(expected) ^ set(trainable), key=view.names.index)
    if differ:
        name = differ[0]
        state = "trainable" if name in expected else "frozen"
        raise CheckpointError(
            f"the plan {plan} does not describe this model: it makes {len(differ)} parameters "
            f"train differently from requires_grad (first: '{name}' is {state} under the plan, "
            f"requires_grad={view[name].trainable}). Apply the plan again, or pass the plan "
            "that was applied and the grouping it was applied with (grouping=fl.Grouping(...))."
        )
    if set(mask.frozen_stats) != set(stats):
        raise CheckpointError(
            f"the plan {plan} fixes the BatchNorm statistics of {sorted(mask.frozen_stats)}, "
            f"but the model has fixed statistics in {stats}. Apply the plan again."
        )


def _effective_trainable(view: TreeView, mask: Mask) -> list[str]:
    """What a mask makes trainable once applied: integer parameters cannot require grad."""
    return [leaf.name for leaf in view if leaf.kind == PARAM and mask[leaf.name]
            and leaf.is_floating]


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return type(tensor).__name__ == "DTensor" and hasattr(tensor, "full_tensor")


def _is_sharded(tensors: dict[str, torch.Tensor]) -> bool:
    return any(_is_dtensor(t) for t in tensors.values())


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor is gathered (a collective: every rank must call)."""
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor


def _payload(tensors: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors to write; copied only where two would share memory, which
    safetensors refuses (e.g. parameters that are views of one flat buffer)."""
    out: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name in names:
        tensor = _full(tensors[name]).detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages or not storage:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _refuse_meta(tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if tensor.is_meta:
            raise CheckpointError(
                f"'{name}' is on the meta device (it has no values); load the real weights "
                "into the model before saving or loading a checkpoint."
            )


def _digest(tensor: torch.Tensor) -> str:
    """A content digest of one tensor: dtype, shape and bytes (quantised: values + scales)."""
    tensor = tensor.detach()
    chunks: list[Any] = []
    if tensor.is_quantized:
        if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            chunks.append(f"{tensor.q_scale()},{tensor.q_zero_point()}".encode())
        else:
            chunks += [_bytes(tensor.q_per_channel_scales()),
                       _bytes(tensor.q_per_channel_zero_points())]
        chunks.append(_bytes(tensor.int_repr()))
    else:
        chunks.append(_bytes(tensor))
    return digest(str(tensor.dtype), tensor.shape, chunks)


def _bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


# --- writing and reading -------------------------------------------------------------------------


def _write_atomic(path: str, payload: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Serialise in memory and write atomically (:func:`frostline.core.checkpoint.write_atomic`):
    safetensors' ``save_file`` writes its own hidden temporary file (mode 0o600, left behind
    in full if the process is killed)."""
    import safetensors.torch

    write_atomic(path, safetensors.torch.save(payload, metadata=metadata))


def _read(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return read_file(path, "pt")


# --- checks on load ------------------------------------------------------------------------------


def _match_tensors(payload: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                   strict: bool, path: str) -> tuple[list[str], list[str]]:
    order = {name: i for i, name in enumerate(tensors)}
    missing = sorted(n for n in payload if n not in tensors)
    if missing and strict:
        raise CheckpointError(
            f"{path!r} holds {len(missing)} tensors this model does not have ({few(missing)}); "
            "pass strict=False to skip them."
        )
    loaded = sorted((n for n in payload if n in tensors), key=order.__getitem__)
    for name in loaded:
        stored, target = payload[name], tensors[name]
        if stored.shape != target.shape or stored.dtype != target.dtype:
            raise CheckpointError(
                f"'{name}' in {path!r} is {stored.dtype} {tuple(stored.shape)}, but the model's "
                f"is {target.dtype} {tuple(target.shape)}; load onto the base model the "
                "checkpoint was trained from."
            )
    return loaded, missing


def _mask_to_restore(resolved: Resolved, plan: Plan | None, state: dict[str, Any],
                     strict: bool, path: str) -> Mask:
    view = resolved.view
    recorded = set(state["trainable"])
    if plan is None:
        params = [leaf.name for leaf in view if leaf.kind == PARAM]
        return Mask(names=tuple(params), trainable=tuple(n in recorded for n in params),
                    frozen_stats=tuple(state["frozen_stats"]))
    try:
        mask = replace(resolved, plan=plan).mask
    except FrostlineError as exc:
        raise CheckpointError(
            f"the plan stored in {path!r} cannot be evaluated on this model: {exc}") from None
    now = set(_effective_trainable(view, mask))
    if strict and (now != recorded or set(mask.frozen_stats) != set(state["frozen_stats"])):
        differ = sorted(now ^ recorded) or sorted(set(mask.frozen_stats)
                                                  ^ set(state["frozen_stats"]))
        raise CheckpointError(
            f"the plan stored in {path!r} ({plan}) gives a different trainable state on this "
            f"model than when it was saved ({len(differ)} differ, first: '{differ[0]}'). Pass "
            "the grouping used when the plan was applied (grouping=fl.Grouping(...)), or "
            "strict=False to apply the plan as it evaluates now."
        )
    return mask


def _refuse_untrained(loaded: list[str], view: TreeView, mask: Mask, path: str) -> None:
    """Refuse stored tensors that do not train under ``mask``: copying them would overwrite
    frozen base values (a file edited by hand, or written by other tools)."""
    trainable = set(_effective_trainable(view, mask))
    fixed = set(mask.frozen_stats)
    allowed = {leaf.name for leaf in view if leaf.name in trainable or (
        leaf.kind != PARAM and leaf.path[-1] in STAT_NAMES and leaf.owners
        and is_batchnorm(leaf.owners[-1]) and leaf.module_path not in fixed)}
    extra = [name for name in loaded if name not in allowed]
    if extra:
        raise CheckpointError(
            f"{path!r} holds {len(extra)} tensors that are frozen under its own plan "
            f"({few(extra)}); loading them would overwrite frozen base values. A checkpoint "
            "holds only trainable parameters and the statistics of BatchNorms that still "
            "update: write it with fl.save_trainable, or remove those tensors from the file."
        )
