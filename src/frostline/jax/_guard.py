"""The JAX guard: prove that frozen leaves did not move, from cheap on-device fingerprints.

A fingerprint is two position-weighted 32-bit checksums of a leaf's raw bits, computed by one
jitted reduction over all watched leaves where the arrays live; only 8 bytes per leaf come back
to the host, and no copy of the model is kept. Any change of a single element changes both sums.

JAX models are immutable: a training step returns a new model. Give it to the snapshot, either
as ``snap.check(new_model)`` or, inside ``fl.guard``, as ``model = snap.update(new_model)`` (the
guard checks the last model given when the block ends). Flax NNX modules change in place, so
``snap.check()`` with no argument re-reads the live module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import GuardError
from ..core.leaves import BUFFER, PARAM, TreeView
from ..core.mask import Mask
from ..core.norms import STAT_NAMES, is_batchnorm
from ._models import arrays_of, is_nnx, modules_of, split_state

_MIX_A = np.uint32(2654435761)
_MIX_B = np.uint32(2246822519)


def _words(x: jax.Array) -> jax.Array:
    """The raw bits of ``x`` as a flat uint32 vector."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    if jnp.iscomplexobj(x):
        x = jnp.stack([x.real, x.imag])
    size = x.dtype.itemsize
    if size >= 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
    narrow = jnp.uint16 if size == 2 else jnp.uint8
    return jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32).ravel()


def _fingerprint(x: jax.Array) -> jax.Array:
    words = _words(x)
    index = jnp.arange(words.size, dtype=jnp.uint32)
    odd_a = index * _MIX_A * np.uint32(2) + np.uint32(1)
    odd_b = index * _MIX_B * np.uint32(2) + np.uint32(1)
    mixed = words ^ (words >> np.uint32(15))
    return jnp.stack([jnp.sum(words * odd_a, dtype=jnp.uint32),
                      jnp.sum(mixed * odd_b, dtype=jnp.uint32)])


@jax.jit
def _fingerprints(arrays: Sequence[jax.Array]) -> list[jax.Array]:
    return [_fingerprint(x) for x in arrays]


def fingerprints(arrays: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str, int, int]]:
    """``name -> (shape, dtype, sum_a, sum_b)`` for every array, computed on its device."""
    names = list(arrays)
    sums = jax.device_get(_fingerprints([jnp.asarray(arrays[n]) for n in names]))
    return {n: (tuple(np.shape(arrays[n])), str(arrays[n].dtype), int(s[0]), int(s[1]))
            for n, s in zip(names, sums)}


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

    def __init__(self, model: Any, view: TreeView, mask: Mask, *, buffers: bool = False):
        # One fingerprint per array: an alias of a shared array (eqx.nn.Shared) has no array.
        own = [leaf for leaf in view if view.canonical[leaf.name] == leaf.name]
        trainable = {leaf.name for leaf in own if leaf.kind == PARAM and mask[leaf.name]}
        frozen = [leaf.name for leaf in own if leaf.kind == PARAM and not mask[leaf.name]]
        module, state = split_state(model)
        self._state_stats: dict[str, tuple[str, int]] = {}
        if buffers:
            frozen += _watched_stats(view, mask)
            if state is not None:
                self._state_stats = _state_stats(module, view, mask)
                frozen += list(self._state_stats)
        self._stats = frozenset(leaf.name for leaf in view if leaf.kind == BUFFER) | set(
            self._state_stats)
        self.frozen = tuple(frozen)
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
        now = fingerprints(self._arrays(model))
        moved = [n for n in self.frozen if now[n] != self._prints[n]]
        stats = [n for n in moved if n in self._stats]
        if moved and not stats:
            raise GuardError(
                f"{len(moved)} frozen leaves moved: {', '.join(moved)}. They must not change: "
                "differentiate only the trainable part (fl.partition) and give the optimizer "
                "only that part."
            )
        if moved:
            raise GuardError(
                f"{len(moved)} frozen leaves moved: {', '.join(moved)}. The statistics among "
                f"them ({', '.join(stats)}) move when their BatchNorm runs in training mode: "
                "use a plan with freeze_bn_stats=True and put the BatchNorms in the mode it "
                "says (model = fl.apply(model, plan), or fl.frozen_bn_inference(model, plan)) after "
                "every change of the plan or of the mode (model.train())."
                + (" Parameters moved too: differentiate only the trainable part "
                   "(fl.partition)." if len(stats) < len(moved) else "")
            )
        if require_trainable_moved:
            still = [n for n in self.trainable if now[n] == self._prints[n]]
            if still:
                raise GuardError(
                    f"{len(still)} trainable parameters did not move: {', '.join(still)}. "
                    "Check that the optimizer receives them and that their gradient is not zero."
                )


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
