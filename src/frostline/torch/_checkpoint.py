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

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._errors import CheckpointError, FrostlineError, PlanError
from ..core.groups import Grouping
from ..core.leaves import PARAM, TreeView
from ..core.mask import Mask
from ..core.norms import STAT_NAMES, is_batchnorm
from ..core.plan import Plan
from ..core.resolve import resolve
from ._apply import PLAN_ATTRIBUTE, apply_mask
from ._view import build_view, named_tensors
from ._wrappers import unwrap

FORMAT = "frostline.trainable/1"
_KEY_FORMAT = "frostline.format"
_KEY_PLAN = "frostline.plan"
_KEY_STATE = "frostline.state"
_KEY_BASE = "frostline.base"
_SHOWN = 5


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`save_trainable` wrote or :func:`load_trainable` restored.

    Attributes:
        path: the checkpoint file.
        tensors: names of the tensors stored in (or loaded from) the file, in model order.
        plan: the plan stored with the checkpoint (None when only the trainable state was stored).
        trainable: names of the parameters that train under the checkpoint's state.
        skipped: stored tensors the model does not have (only with ``strict=False``).
        written: False on the ranks of a sharded model that only helped gather (rank 0 writes).
    """

    path: str
    tensors: tuple[str, ...]
    plan: Plan | None
    trainable: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    written: bool = True


def save_trainable(model: nn.Module, path: str | os.PathLike[str], plan: Plan | None | bool = None,
                   grouping: Grouping | None = None) -> CheckpointInfo:
    """Write the trainable part of ``model`` to a safetensors file, atomically.

    Stored: every parameter with ``requires_grad`` (each shared tensor once) and the running
    statistics of BatchNorms whose statistics still update. Metadata: the plan (``plan``, else
    the plan last applied to the model, else none: ``plan=False`` stores none), the trainable
    state, and the base model's architecture plus a digest of every tensor not stored.

    The file is written to a temporary file in the same directory, flushed to disk, then
    renamed over ``path``: a crash leaves the previous file intact. A model sharded with FSDP2
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
    model = _unwrap(model)
    view = build_view(model)
    tensors = named_tensors(model)
    _refuse_meta(tensors)
    stored_names = _stored_names(model, view)
    trainable = _trainable_names(view)
    stats = sorted(view.frozen_stats)
    plan, plan_dict = _plan_to_store(model, plan, view, trainable, stats, grouping)
    payload = _payload(tensors, stored_names)
    stored = set(stored_names)
    base = {
        "architecture": _architecture(view),
        "digests": {name: _digest(_full(tensors[name])) for name in _canonical(view)
                    if name not in stored},
    }
    metadata = {
        _KEY_FORMAT: FORMAT,
        _KEY_PLAN: json.dumps(plan_dict),
        _KEY_STATE: json.dumps({"trainable": list(trainable), "frozen_stats": stats}),
        _KEY_BASE: json.dumps(base),
    }
    write = not (_is_sharded(tensors) and _rank() != 0)
    if write:
        _write_atomic(os.fspath(path), payload, metadata)
    return CheckpointInfo(os.fspath(path), tuple(stored_names), plan, tuple(trainable),
                          written=write)


def load_trainable(model: nn.Module, path: str | os.PathLike[str], strict: bool = True, *,
                   check_base: bool = True, grouping: Grouping | None = None) -> CheckpointInfo:
    """Restore a checkpoint written by :func:`save_trainable` onto a freshly loaded base model.

    Everything is checked before the model is touched: the architecture and the frozen
    weights must be those the checkpoint was trained on (``check_base``), and every stored
    tensor must fit. Then the stored tensors are copied in and the stored plan is re-applied
    (else the stored trainable state), so ``requires_grad`` and frozen BatchNorm statistics are
    as they were when saving.

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
            names the tensors, shapes or dtypes that differ), or a tensor does not fit.
    """
    model = _unwrap(model)
    path = os.fspath(path)
    payload, meta = _read(path)
    view = build_view(model)
    tensors = named_tensors(model)
    _refuse_meta(tensors)
    if _is_sharded(tensors):
        raise CheckpointError(
            "the model's parameters are sharded (DTensor); load the checkpoint onto the "
            "unsharded model, then call fully_shard."
        )
    if check_base:
        _check_architecture(meta["base"]["architecture"], view, path)
        _check_digests(meta["base"]["digests"], tensors, path)
    loaded, skipped = _match_tensors(payload, tensors, strict, path)
    plan = meta["plan"]
    mask = _mask_to_restore(model, view, plan, meta["state"], strict, grouping, path)
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


def _canonical(view: TreeView) -> list[str]:
    """One name per distinct tensor (the first in view order)."""
    canonical = view.canonical
    return [leaf.name for leaf in view if canonical[leaf.name] == leaf.name]


def _trainable_names(view: TreeView) -> list[str]:
    return [leaf.name for leaf in view if leaf.kind == PARAM and leaf.trainable]


def _stored_names(model: nn.Module, view: TreeView) -> list[str]:
    """Canonical trainable parameters, plus the statistics of BatchNorms that still update."""
    return [name for name in _canonical(view) if (
        view[name].kind == PARAM and view[name].trainable
    ) or (view[name].kind != PARAM and view[name].path[-1] in STAT_NAMES
          and view[name].owners and is_batchnorm(view[name].owners[-1])
          and view[name].module_path not in view.frozen_stats)]


def _plan_to_store(model: nn.Module, plan: Plan | None | bool, view: TreeView,
                   trainable: list[str], stats: list[str],
                   grouping: Grouping | None) -> tuple[Plan | None, dict[str, Any] | None]:
    """The plan to record and its dict. A plan passed in must describe the model; the plan the
    model remembers may not any more (``requires_grad`` changed by hand, other group options):
    then the trained weights are still saved, with a warning, rather than lost to an error."""
    if plan is False:
        return None, None
    explicit = plan is not None
    if explicit and not isinstance(plan, Plan):
        raise CheckpointError(f"plan must be a frostline Plan, None or False, got {plan!r}.")
    plan = plan if explicit else getattr(model, PLAN_ATTRIBUTE, None)
    if plan is None:
        return None, None
    try:
        _check_plan_matches(model, plan, view, trainable, stats, grouping)
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


def _check_plan_matches(model: nn.Module, plan: Plan, view: TreeView, trainable: list[str],
                        stats: list[str], grouping: Grouping | None) -> None:
    mask = resolve(model, plan, grouping).mask
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


def _architecture(view: TreeView) -> list[list[Any]]:
    canonical = view.canonical
    return [[leaf.name, leaf.kind, leaf.dtype, list(leaf.shape),
             canonical[leaf.name] if canonical[leaf.name] != leaf.name else None]
            for leaf in view]


# --- tensors -------------------------------------------------------------------------------------


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
    h = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    if tensor.is_quantized:
        if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            h.update(f"{tensor.q_scale()},{tensor.q_zero_point()}".encode())
        else:
            h.update(_bytes(tensor.q_per_channel_scales()))
            h.update(_bytes(tensor.q_per_channel_zero_points()))
        tensor = tensor.int_repr()
    h.update(_bytes(tensor))
    return h.hexdigest()[:32]


def _bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


# --- writing and reading -------------------------------------------------------------------------


def _write_atomic(path: str, payload: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over ``path``."""
    from safetensors.torch import save_file

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    os.close(fd)
    try:
        save_file(payload, tmp, metadata=metadata)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            raw = handle.metadata() or {}
            payload = {key: handle.get_tensor(key) for key in handle.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path!r}.") from None
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path!r} is not a readable safetensors file: {exc}.") from None
    if raw.get(_KEY_FORMAT) != FORMAT:
        raise CheckpointError(
            f"{path!r} is not a frostline trainable-only checkpoint (metadata "
            f"{_KEY_FORMAT!r} is {raw.get(_KEY_FORMAT)!r}, expected {FORMAT!r}); write it with "
            "fl.save_trainable."
        )
    try:
        meta = {"plan": json.loads(raw[_KEY_PLAN]), "state": json.loads(raw[_KEY_STATE]),
                "base": json.loads(raw[_KEY_BASE])}
        _validate_meta(meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path!r} has damaged frostline metadata ({exc!r}).") from None
    if meta["plan"] is not None:
        try:
            meta["plan"] = Plan.from_dict(meta["plan"])
        except PlanError as exc:
            raise CheckpointError(f"{path!r} holds a plan that cannot be read: {exc}") from None
    return payload, meta


def _validate_meta(meta: dict[str, Any]) -> None:
    state, base = meta["state"], meta["base"]
    strings = (state["trainable"], state["frozen_stats"], list(base["digests"]),
               list(base["digests"].values()))
    if not all(isinstance(items, list) and all(isinstance(x, str) for x in items)
               for items in strings):
        raise ValueError("the trainable state and digests must be lists of names")
    if meta["plan"] is not None and not isinstance(meta["plan"], dict):
        raise ValueError("the plan must be a mapping")
    for entry in base["architecture"]:
        if not (isinstance(entry, list) and len(entry) == 5
                and all(isinstance(x, str) for x in entry[:3])
                and isinstance(entry[3], list) and all(type(n) is int for n in entry[3])
                and (entry[4] is None or isinstance(entry[4], str))):
            raise ValueError(f"malformed architecture entry {entry!r}")


# --- checks on load ------------------------------------------------------------------------------


def _check_architecture(recorded: list[list[Any]], view: TreeView, path: str) -> None:
    saved = {entry[0]: tuple(map(_hashable, entry[1:])) for entry in recorded}
    now = {row[0]: tuple(map(_hashable, row[1:])) for row in _architecture(view)}
    missing = [n for n in saved if n not in now]
    extra = [n for n in now if n not in saved]
    changed = [f"'{n}' {_describe(saved[n])} -> {_describe(now[n])}"
               for n in saved if n in now and saved[n] != now[n]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors of the base are missing from this model "
                        f"({_few(missing)})")
    if extra:
        problems.append(f"{len(extra)} tensors of this model were not in the base ({_few(extra)})")
    if changed:
        problems.append(f"{len(changed)} tensors changed ({', '.join(changed[:_SHOWN])}"
                        + (", ..." if len(changed) > _SHOWN else "") + ")")
    if problems:
        raise CheckpointError(
            f"{path!r} was saved from a different base model: " + "; ".join(problems)
            + ". Load the base model the checkpoint was trained from, or pass check_base=False "
            "to load anyway."
        )


def _check_digests(recorded: dict[str, str], tensors: dict[str, torch.Tensor], path: str) -> None:
    differ = [name for name, digest in recorded.items()
              if name not in tensors or _digest(tensors[name]) != digest]
    if differ:
        raise CheckpointError(
            f"{path!r} was trained on other frozen weights: {len(differ)} frozen tensors of this "
            f"model differ from the base the checkpoint was saved from ({_few(differ)}). Load "
            "the same pretrained weights, or pass check_base=False to load anyway."
        )


def _match_tensors(payload: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                   strict: bool, path: str) -> tuple[list[str], list[str]]:
    order = {name: i for i, name in enumerate(tensors)}
    missing = sorted(n for n in payload if n not in tensors)
    if missing and strict:
        raise CheckpointError(
            f"{path!r} holds {len(missing)} tensors this model does not have ({_few(missing)}); "
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


def _mask_to_restore(model: nn.Module, view: TreeView, plan: Plan | None, state: dict[str, Any],
                     strict: bool, grouping: Grouping | None, path: str) -> Mask:
    recorded = set(state["trainable"])
    if plan is None:
        params = [leaf.name for leaf in view if leaf.kind == PARAM]
        return Mask(names=tuple(params), trainable=tuple(n in recorded for n in params),
                    frozen_stats=tuple(state["frozen_stats"]))
    mask = resolve(model, plan, grouping).mask
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


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _describe(entry: tuple[Any, ...]) -> str:
    kind, dtype, shape, tie = entry
    return f"{kind} {dtype} {tuple(shape)}" + (f" shared with '{tie}'" if tie else "")


def _few(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")

