"""The JAX guard: prove that frozen leaves did not move, from fingerprints of their bytes.

A fingerprint is the XXH3-128 digest (``xxhash``) of a leaf's raw bytes, with its shape and
dtype: a change of any number of elements leaves it the same with probability near 2**-128,
and no copy of the model is kept (16 bytes per leaf). The bytes are hashed on the host, where
arrays on the CPU are read in place; arrays on an accelerator are copied to the host once per
snapshot and check.

JAX models are immutable: a training step returns a new model. Give it to the snapshot, either
as ``snap.check(new_model)`` or, inside ``fl.guard``, as ``model = snap.update(new_model)`` (the
guard checks the last model given when the block ends). Flax NNX modules change in place, so
``snap.check()`` with no argument re-reads the live module.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xxhash

from .._errors import GuardError
from ..core.leaves import BUFFER, PARAM, TreeView
from ..core.mask import Mask
from ..core.norms import STAT_NAMES, is_batchnorm
from ._models import arrays_of, is_nnx, modules_of, split_state


def _host_bytes(x: Any) -> memoryview:
    """The raw bytes of an array, on the host (no copy for a contiguous CPU array)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    data = np.ascontiguousarray(np.asarray(x))
    return memoryview(data.reshape(-1).view(np.uint8))


def fingerprints(arrays: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str, int]]:
    """``name -> (shape, dtype, XXH3-128 of the bytes)`` for every array.

    Example:
        >>> a = fingerprints({"w": jnp.array([1.0, 2.0])})["w"]
        >>> a == fingerprints({"w": jnp.array([2.0, 1.0])})["w"], a[:2]
        (False, ((2,), 'float32'))
    """
    return {n: (tuple(np.shape(x)), str(x.dtype), xxhash.xxh3_128_intdigest(_host_bytes(x)))
            for n, x in arrays.items()}


class JaxSnapshot:
    """Fingerprints of a JAX model's frozen (and trainable) leaves, taken once.

    Use :meth:`check` with the model after training, or :meth:`update` inside ``fl.guard``.
    ``model`` may be an Equinox ``(model, state)`` pair: with ``buffers=True`` the statistics
    that the ``eqx.nn.State`` holds for BatchNorms with fixed statistics (or all-frozen
    parameters) are watched too, as ``<path>.running_mean`` / ``<path>.running_var``; check
    the pair after training.

    Attributes:
        frozen: names of the watched frozen leaves.
        trainable: names of the trainable parameters (for ``require_trainable_moved``).
    """

    def __init__(self, model: Any, view: TreeView, mask: Mask, *, buffers: bool = True):
        # One fingerprint per array: an alias of a shared array (eqx.nn.Shared) has no array.
        own = [leaf for leaf in view if view.canonical[leaf.name] == leaf.name]
        trainable = {leaf.name for leaf in own if leaf.kind == PARAM and mask[leaf.name]}
        frozen = [leaf.name for leaf in own if leaf.kind == PARAM and not mask[leaf.name]]
        module, state = split_state(model)
        self._state_stats = (_state_stats(module, view, mask)
                             if buffers and state is not None else {})
        self._stats = (*_watched_stats(view, mask), *self._state_stats) if buffers else ()
        self.frozen = (*frozen, *self._stats)
        self.trainable = tuple(n for n in view.names if n in trainable)
        self._mutable = is_nnx(model)
        self._model = model
        self._updated = False
        self._prints = fingerprints(self._arrays(model))

    def _arrays(self, model: Any) -> dict[str, Any]:
        module, state = split_state(model)
        arrays = arrays_of(module)
        if self._state_stats:
            if state is None:
                raise GuardError(
                    "the snapshot watches BatchNorm statistics held in an eqx.nn.State: check "
                    "the (model, state) pair after training, not the model alone."
                )
            modules = modules_of(module)
            for name, (path, position) in self._state_stats.items():
                arrays[name] = state.get(modules[path].batch_state_index)[position]
        missing = [n for n in (*self.frozen, *self.trainable) if n not in arrays]
        if missing:
            raise GuardError(
                f"the model checked lacks {len(missing)} leaves of the snapshot (first: "
                f"{missing[:3]}); check the model the snapshot was taken of, after training."
            )
        return {n: arrays[n] for n in (*self.frozen, *self.trainable)}

    def update(self, model: Any) -> Any:
        """Remember ``model`` as the current one (checked by ``fl.guard`` at the end); returns it."""
        self._model = model
        self._updated = True
        return model

    def check(self, model: Any = None, *, require_trainable_moved: bool = False) -> None:
        """Raise :class:`GuardError` naming every frozen leaf of ``model`` that moved.

        Args:
            model: the model after training (default: the last one given to :meth:`update`;
                for Flax NNX, the live module).
            require_trainable_moved: also raise when a trainable parameter did not move.

        Raises:
            GuardError: frozen leaves moved, trainable ones did not (when required), or an
                immutable model was never handed back.
        """
        if model is None:
            if not (self._mutable or self._updated):
                raise GuardError(
                    "JAX models are immutable, so this snapshot cannot see the trained model: "
                    "pass it as snap.check(new_model), or call model = snap.update(new_model) "
                    "inside the fl.guard block."
                )
            model = self._model
        arrays = self._arrays(model)
        now = fingerprints(arrays)
        moved = [n for n in self.frozen if now[n] != self._prints[n]]
        recast = [n for n in moved if now[n][:2] != self._prints[n][:2]]
        if recast:
            changes = ", ".join(f"{n} ({self._prints[n][1]}{list(self._prints[n][0])} -> "
                                f"{now[n][1]}{list(now[n][0])})" for n in recast)
            raise GuardError(
                f"{len(recast)} frozen leaves changed dtype or shape since the snapshot: "
                f"{changes}. A cast rounds every value: keep the frozen part in its dtype and "
                "cast inside the model's call, or take the snapshot after the cast."
            )
        rounded = {n: low for n in moved if n not in self._stats
                   for low in [_fits_lower_precision(arrays[n])] if low is not None}
        params = [n for n in moved if n not in self._stats and n not in rounded]
        stats = [n for n in moved if n in self._stats]
        problems = []
        if rounded:
            problems.append(
                f"{len(rounded)} frozen leaves moved, and every value now fits a lower precision: "
                f"{', '.join(f'{n} ({low})' for n, low in rounded.items())}. They were rounded "
                "through it and back (a cast to bfloat16/float16 and back, or weights loaded "
                "from a low-precision copy), not trained: keep full-precision weights and cast "
                "inside the model's call."
            )
        if params:
            problems.append(
                f"{len(params)} frozen leaves moved: {', '.join(params)}. They must not change: "
                "differentiate only the trainable part (fl.partition) and give the optimizer "
                "only that part."
            )
        if stats:
            problems.append(
                f"{len(stats)} BatchNorm statistics of frozen BatchNorms moved: "
                f"{', '.join(stats)}. A BatchNorm in training mode updates them: use a plan "
                "with freeze_bn_stats=True and set the modes it gives (model = fl.apply(model, "
                "plan), or fl.frozen_bn_inference) after every change of plan or mode, or pass "
                "buffers=False to the guard if they are meant to adapt."
            )
        if problems:
            raise GuardError(" ".join(problems))
        if require_trainable_moved:
            still = [n for n in self.trainable if now[n] == self._prints[n]]
            low = [n for n in still if now[n][1] in _LOW]
            if still:
                raise GuardError(
                    f"{len(still)} trainable parameters did not move: {', '.join(still)}. "
                    "Check that the optimizer receives them and that their gradient is not zero."
                    + (f" {len(low)} of them are {'/'.join(sorted({now[n][1] for n in low}))}: "
                       "an update below half the spacing of representable values around a "
                       "weight is rounded away (precision loss); keep float32 weights and cast "
                       "inside the model's call." if low else "")
                )


_LOW = ("bfloat16", "float16")
_MIN_ROUNDED = 8


def _fits_lower_precision(x: Any) -> str | None:
    """The lower precision every value of a float array fits exactly, if any.

    Only for arrays of at least ``_MIN_ROUNDED`` distinct values: a few round values (zeros,
    ones, small integers) fit any precision without having been rounded.
    """
    if not jnp.issubdtype(x.dtype, jnp.floating) or str(x.dtype) in _LOW:
        return None
    if np.unique(np.asarray(x)).size < _MIN_ROUNDED:
        return None
    for low in _LOW:
        if bool(jnp.array_equal(x.astype(low).astype(x.dtype), x)):
            return low
    return None


def _all_params_frozen(view: TreeView, mask: Mask) -> set[str]:
    params_frozen: dict[str, bool] = {}
    for leaf in view:
        if leaf.kind == PARAM and leaf.owners and is_batchnorm(leaf.owners[-1]):
            path = leaf.module_path
            params_frozen[path] = params_frozen.get(path, True) and not mask[leaf.name]
    return {path for path, frozen in params_frozen.items() if frozen}


def _watched_stats(view: TreeView, mask: Mask) -> list[str]:
    """Statistics that must not move: those of the BatchNorms the plan fixes
    (``mask.frozen_stats``), and those of BatchNorms whose parameters are all frozen (what
    a BatchNorm left in training mode would update), as the PyTorch guard watches."""
    fixed = set(mask.frozen_stats) | _all_params_frozen(view, mask)
    return [leaf.name for leaf in view if leaf.kind == BUFFER and leaf.path[-1] in STAT_NAMES
            and leaf.owners and (leaf.module_path in fixed or _in_params(leaf.path) in fixed)]


def _in_params(path: tuple[str, ...]) -> str:
    """Where a Linen collection's entry has its parameters: ``batch_stats.A.BatchNorm_0.mean``
    belongs to the module ``params.A.BatchNorm_0``."""
    return ".".join(("params", *path[1:-1]))


def _state_stats(module: Any, view: TreeView, mask: Mask) -> dict[str, tuple[str, int]]:
    """Equinox BatchNorm statistics to watch in the state: ``name -> (BatchNorm path, index)``
    (``batch_state_index`` holds the running mean, then the running variance)."""
    fixed = set(mask.frozen_stats) | _all_params_frozen(view, mask)
    out = {}
    for path, bn in modules_of(module).items():
        if path in fixed and hasattr(bn, "batch_state_index"):
            prefix = f"{path}." if path else ""
            out[prefix + "running_mean"] = (path, 0)
            out[prefix + "running_var"] = (path, 1)
    return out
