"""Trainable-only checkpoints for JAX models: Equinox modules, Flax NNX modules and pytrees.

The file format is the PyTorch backend's (:mod:`frostline.core.checkpoint`): a safetensors file
with the trained arrays, and metadata holding the plan, the trainable state, the base model's
architecture and a digest of every array not stored. Stored: the parameters the plan trains
(each shared array once) and the statistics of BatchNorms whose statistics still update (NNX
``BatchStat`` variables, Linen ``batch_stats``). Equinox keeps BatchNorm statistics in an
``eqx.nn.State`` outside the model: save that with ``eqx.tree_serialise_leaves`` beside.

Loading checks everything before building the result: the base (architecture, and a digest
of every frozen array), and that the file holds exactly the arrays the stored plan trains on
this model, no more and no fewer. JAX models are immutable: :func:`load_trainable` returns the
restored model (NNX modules are restored in place and returned), with BatchNorm modes set
from the plan.

With orbax: keep saving the full training state with orbax where you resume training; a
frostline checkpoint is the small, base-checked file to ship: restore the pretrained base as
you load it anyway (from its own checkpoint, or an orbax restore of it), then
``model = fl.load_trainable(base, "top.safetensors")``.

Example:
    >>> import os, tempfile, jax, equinox as eqx, frostline as fl
    >>> model = eqx.nn.MLP(2, 1, 4, 2, key=jax.random.key(0))
    >>> path = os.path.join(tempfile.mkdtemp(), "head.safetensors")
    >>> fl.save_trainable(model, path, fl.Plan.lock(1)).tensors
    ('layers.2.weight', 'layers.2.bias')
    >>> restored = fl.load_trainable(eqx.nn.MLP(2, 1, 4, 2, key=jax.random.key(0)), path)
    >>> bool((restored.layers[2].weight == model.layers[2].weight).all())
    True
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from .._errors import CheckpointError, PlanError, SelectorError
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
from ..core.leaves import BUFFER, TreeView
from ..core.mask import Mask
from ..core.norms import STAT_NAMES, is_batchnorm
from ..core.plan import Plan
from ..core.resolve import resolve
from ._mask import trainable_names
from ._models import arrays_of, is_nnx, view_of
from ._view import dotted, is_array


def save_trainable(model: Any, path: str | os.PathLike[str], plan: Plan | None = None,
                   grouping: Grouping | None = None) -> CheckpointInfo:
    """Write the part of ``model`` that ``plan`` trains to a safetensors file, atomically.

    Args:
        model: an Equinox module, a Flax NNX module or a pytree of arrays (Linen variables).
        path: the file to write.
        plan: the plan the model was trained under (JAX models carry no trainable flags).
        grouping: how its groups were built (``spec=``, ``names=``); stored with the plan.

    Returns:
        :class:`~frostline.core.checkpoint.CheckpointInfo` with the stored names.

    Raises:
        CheckpointError: no plan was given, or it cannot be stored (a Python predicate).
    """
    if not isinstance(plan, Plan):
        raise CheckpointError(
            f"a JAX model carries no trainable flags: pass the plan it was trained under, "
            f"fl.save_trainable(model, path, plan); got {type(plan).__name__}."
        )
    try:
        plan = plan.with_grouping(grouping) if grouping is not None else plan
        plan_dict = plan.to_dict()
    except PlanError as exc:
        raise CheckpointError(f"the plan cannot be stored with the checkpoint: {exc}") from None
    view = view_of(model)
    mask = resolve(model, plan).mask
    names = _stored_names(view, mask)
    arrays = {name: np.asarray(jax.device_get(value)) for name, value in arrays_of(model).items()}
    stored = set(names)
    base = {"architecture": architecture(view),
            "digests": {name: _digest(arrays[name]) for name in canonical_names(view)
                        if name not in stored}}
    trains = trainable_names(view, mask)
    trainable = [n for n in view.names if n in trains]
    meta = metadata(plan_dict, trainable, mask.frozen_stats, base)
    payload = {name: np.ascontiguousarray(arrays[name]) for name in names}
    path = os.fspath(path)
    import safetensors.numpy

    write_atomic(path, safetensors.numpy.save(payload, metadata=meta))
    return CheckpointInfo(path, tuple(names), plan, tuple(trainable))


def load_trainable(model: Any, path: str | os.PathLike[str], strict: bool = True, *,
                   check_base: bool = True, grouping: Grouping | None = None) -> Any:
    """Restore a checkpoint written by :func:`save_trainable` onto the base model.

    Args:
        model: the base model (Equinox, NNX or pytree), with its pretrained weights.
        path: the checkpoint file.
        strict: the stored plan must give the stored trainable state on this model; with
            False, stored arrays the model lacks are skipped. The file must hold every array
            the plan trains either way.
        check_base: refuse a base whose architecture or frozen weights differ.
        grouping: grouping options that override those stored with the plan.

    Returns:
        The restored model: a new one (Equinox, pytrees) or ``model`` itself (NNX, changed in
        place), its BatchNorm modes set from the plan.

    Raises:
        CheckpointError: not a frostline checkpoint, another base, or arrays that are not
            exactly those the plan trains (the message names them).
    """
    path = os.fspath(path)
    payload, meta = _read(path)
    view = view_of(model)
    arrays = arrays_of(model)
    if check_base:
        check_architecture(meta["base"]["architecture"], view, path)
        check_digests(meta["base"]["digests"], lambda name: _digest(np.asarray(
            jax.device_get(arrays[name]))) if name in arrays else None, path)
    plan = meta["plan"]
    if plan is None:
        raise CheckpointError(f"{path!r} holds no plan; a JAX checkpoint needs one.")
    try:
        mask = resolve(model, plan, grouping).mask
    except SelectorError as exc:
        raise CheckpointError(f"the plan stored in {path!r} does not fit this model: {exc}"
                              ) from None
    _check_payload(payload, view, mask, meta["state"], strict, path)
    restored = _restore(model, view, {n: a for n, a in payload.items() if n in view})
    from ._backend import BACKEND

    return BACKEND.apply(resolve(restored, mask))


def _stored_names(view: TreeView, mask: Mask) -> list[str]:
    """Canonical trainable parameters, and the statistics of BatchNorms that still update."""
    trains = trainable_names(view, mask)
    fixed = set(mask.frozen_stats)
    return [name for name in canonical_names(view) if name in trains or (
        view[name].kind == BUFFER and view[name].path[-1] in STAT_NAMES
        and view[name].owners and is_batchnorm(view[name].owners[-1])
        and view[name].module_path not in fixed)]


def _check_payload(payload: dict[str, np.ndarray], view: TreeView, mask: Mask,
                   state: dict[str, Any], strict: bool, path: str) -> None:
    expected = set(_stored_names(view, mask))
    absent = [n for n in payload if n not in view]
    if absent and strict:
        raise CheckpointError(
            f"{path!r} holds {len(absent)} arrays this model does not have ({few(absent)}); "
            "pass strict=False to skip them."
        )
    extra = sorted(set(payload) - expected - set(absent))
    missing = [n for n in view.names if n in expected and n not in payload]
    if extra or missing:
        problems = ([f"{len(missing)} arrays it trains are not in the file ({few(missing)})"]
                    if missing else []) + ([f"the file holds {len(extra)} arrays it does not "
                                            f"train ({few(extra)})"] if extra else [])
        raise CheckpointError(
            f"{path!r} does not hold exactly what its plan trains on this model: "
            + "; ".join(problems) + ". Load onto the model the checkpoint was saved from, with "
            "the grouping options it was saved with."
        )
    now = [n for n in view.names if n in trainable_names(view, mask)]
    if strict and (set(now) != set(state["trainable"])
                   or set(mask.frozen_stats) != set(state["frozen_stats"])):
        differ = sorted(set(now) ^ set(state["trainable"])) or sorted(
            set(mask.frozen_stats) ^ set(state["frozen_stats"]))
        raise CheckpointError(
            f"the plan stored in {path!r} gives a different trainable state on this model than "
            f"when it was saved ({len(differ)} differ, first: '{differ[0]}'); pass the grouping "
            "options it was saved with, or strict=False."
        )
    for name, stored in payload.items():
        if name not in view:
            continue
        leaf = view[name]
        if tuple(stored.shape) != leaf.shape or str(stored.dtype) != leaf.dtype:
            raise CheckpointError(
                f"'{name}' in {path!r} is {stored.dtype} {tuple(stored.shape)}, but the model's "
                f"is {leaf.dtype} {leaf.shape}; load onto the base the checkpoint was trained from."
            )


def _restore(model: Any, view: TreeView, payload: dict[str, np.ndarray]) -> Any:
    """``model`` with the stored arrays in place (every alias of a shared array, once)."""
    canonical = view.canonical
    placed: dict[str, Any] = {}

    def new_value(name: str, old: Any) -> Any:
        root = canonical.get(name, name)
        if root not in placed:
            value = payload[root]
            placed[root] = (jax.device_put(value, old.sharding) if isinstance(old, jax.Array)
                            else value.copy())
        return placed[root]

    if is_nnx(model):
        from ._nnx import nnx_variables

        for name, variable in nnx_variables(model).items():
            if canonical.get(name, name) in payload:
                variable.set_value(new_value(name, variable.get_value()))
        return model
    def visit(key_path: Any, leaf: Any) -> Any:
        name = dotted(key_path)
        if is_array(leaf) and canonical.get(name, name) in payload:
            return new_value(name, leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(visit, model)


def _digest(array: np.ndarray) -> str:
    contiguous = np.ascontiguousarray(array)
    return digest(str(contiguous.dtype), contiguous.shape, [contiguous.view(np.uint8).data])


def _read(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return read_file(path, "numpy")
