"""optax masks and labels built from a plan.

Every function here returns a :class:`PathLabels`: a function of the parameter tree that optax
calls (``optax.masked`` and ``optax.multi_transform`` accept such functions) and that answers
with a tree of the same structure. Handing optax the label tree itself would go wrong for
Equinox: the tree would be an ``eqx.Module``, which is callable, so optax would call the model.
A :class:`PathLabels` looks each array up by its dotted name, so it fits the full model, the
trainable part from ``fl.partition`` (``None`` holes stay ``None``) and gradients alike.

Recipes that keep frozen leaves fixed when the optimizer sees the full parameters (the
partition route, ``fl.partition``, needs none of them and is cheaper: no frozen gradients):

- ``optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, fl.optax_labels(...))``
  (or ``fl.layer_decay``);
- ``optax.chain(optax.masked(tx, fl.optax_mask(...)), fl.optax_freeze(...))``;
- ``optax.chain(tx, fl.optax_freeze(...))``: the freeze comes **last**.

Two forms look right and move frozen weights: ``optax.masked(tx, mask)`` alone passes the raw
gradients of masked-out leaves through as their updates, and ``optax.chain(fl.optax_freeze(...),
tx)`` zeroes the gradients before ``tx``, whose weight decay then still moves frozen leaves.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import PlanError
from ..core.groups import Grouping
from ..core.mask import Mask
from ..core.plan import Plan
from ..core.resolve import Resolved, resolve
from ._mask import trainable_names
from ._view import map_arrays

TRAINABLE = "trainable"
FROZEN = "frozen"
UNGROUPED = "ungrouped"


@dataclass(frozen=True)
class PathLabels:
    """A label per array, by dotted name, for optax; call it on a pytree to get the label tree.

    Attributes:
        labels: ``(name, label)`` pairs, one per leaf of the model.
        other: the label of leaves that are not arrays (flags, functions).
    """

    labels: tuple[tuple[str, Hashable], ...]
    other: Hashable

    def __call__(self, tree: Any) -> Any:
        lookup = dict(self.labels)

        def label(name: str, _: Any) -> Hashable:
            if name not in lookup:
                raise PlanError(
                    f"the tree given to optax has an array '{name}' that the model the labels "
                    f"were built from lacks (it has e.g. {list(lookup)[:3]}); build the labels "
                    "from the model whose parameters you optimize."
                )
            return lookup[name]

        return map_arrays(tree, label, self.other)

    def as_dict(self) -> dict[str, Hashable]:
        return dict(self.labels)


def optax_mask(model: Any, plan: Plan | Mask | None = None, **group_options: Any) -> PathLabels:
    """An ``optax.masked`` mask: True = trainable (never True for buffers or non-arrays).

    ``optax.masked`` hands masked-out leaves their incoming updates unchanged (on full
    parameters: raw gradients, which move frozen weights), so end the chain with
    :func:`optax_freeze`, as below; ``tx`` then keeps state for the trainable leaves only.

    Example:
        >>> import jax, jax.numpy as jnp, optax, frostline as fl
        >>> params = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
        >>> plan = fl.Plan().freeze("body")
        >>> mask = fl.optax_mask(params, plan)
        >>> mask(params)
        {'body': {'w': False}, 'head': {'w': True}}
        >>> tx = optax.chain(optax.masked(optax.adamw(0.1, weight_decay=0.1), mask),
        ...                  fl.optax_freeze(params, plan))
        >>> grads = jax.tree_util.tree_map(jnp.ones_like, params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["body"]["w"]
        Array([1., 1.], dtype=float32)
    """
    resolved = _resolved(model, plan, group_options)
    names = trainable_names(resolved.view, resolved.mask)
    return PathLabels(tuple((n, n in names) for n in resolved.view.names), False)


def optax_labels(model: Any, plan: Plan | Mask | None = None,
                 **group_options: Any) -> PathLabels:
    """``optax.multi_transform`` labels: ``"trainable"`` or ``"frozen"`` per leaf.

    Example:
        >>> import jax.numpy as jnp, optax, frostline as fl
        >>> params = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
        >>> labels = fl.optax_labels(params, fl.Plan().freeze("body"))
        >>> tx = optax.multi_transform(
        ...     {"trainable": optax.adamw(1e-3), "frozen": optax.set_to_zero()}, labels)
        >>> labels(params)["body"]
        {'w': 'frozen'}
    """
    mask = optax_mask(model, plan, **group_options)
    return PathLabels(tuple((n, TRAINABLE if t else FROZEN) for n, t in mask.labels), FROZEN)


def optax_freeze(model: Any, plan: Plan | Mask | None = None, **group_options: Any) -> Any:
    """``optax.freeze`` for the plan's frozen leaves (it takes True = frozen: inverted here).

    ``optax.freeze`` zeroes the updates of frozen leaves where it stands in a chain: put it
    **last**, after everything that makes updates (weight decay adds ``wd * param`` to a zero
    gradient, so a freeze before ``adamw`` lets frozen kernels decay). The frozen leaves still
    get gradients (and, unless ``tx`` is masked, optimizer state): ``fl.partition`` avoids both.

    Example:
        >>> import jax, jax.numpy as jnp, optax, frostline as fl
        >>> params = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
        >>> freeze = fl.optax_freeze(params, fl.Plan().freeze("body"))
        >>> tx = optax.chain(optax.adamw(0.1, weight_decay=0.1), freeze)
        >>> grads = jax.tree_util.tree_map(jnp.ones_like, params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["body"]["w"]
        Array([0., 0.], dtype=float32)
    """
    import optax

    mask = optax_mask(model, plan, **group_options)
    frozen_true = PathLabels(tuple((n, not t) for n, t in mask.labels), True)
    return optax.freeze(frozen_true)


def layer_decay_labels(model: Any, decay: float, plan: Plan | Mask | None = None,
                       **group_options: Any) -> tuple[PathLabels, dict[str, float]]:
    """Labels per layer group and each label's learning-rate scale (layer-wise decay).

    Group ``i`` of ``n`` is labelled ``"group<i>"`` with scale ``decay ** (n - 1 - i)`` (the
    head trains at the full rate); frozen leaves are ``"frozen"`` (scale 0); trainable leaves
    that are in no group (an explicit ``spec`` that does not cover them) are ``"ungrouped"``
    at the full rate.

    Example:
        >>> import jax.numpy as jnp, frostline as fl
        >>> params = {"blocks": [{"w": jnp.ones(2)} for _ in range(3)]}
        >>> labels, scales = fl.layer_decay_labels(params, 0.5)
        >>> scales
        {'group0': 0.25, 'group1': 0.5, 'group2': 1.0}
    """
    if not 0 < decay <= 1:
        raise PlanError(f"decay must be in (0, 1], got {decay!r}; 0.75 is a common choice.")
    resolved = _resolved(model, plan, group_options)
    view, found = resolved.view, resolved.groups
    names = trainable_names(view, resolved.mask)
    n = len(found)
    scales: dict[str, float] = {}
    labels = []
    for leaf in view:
        index = found.index_of(leaf.name)
        if leaf.name not in names:
            label = FROZEN
        elif index is None:
            label, scales[UNGROUPED] = UNGROUPED, 1.0
        else:
            label = f"group{index}"
            scales[label] = decay ** (n - 1 - index)
        labels.append((leaf.name, label))
    ordered = dict(sorted(scales.items(), key=lambda kv: (kv[0] == UNGROUPED, len(kv[0]), kv[0])))
    return PathLabels(tuple(labels), FROZEN), ordered


def layer_decay(model: Any, make_tx: Callable[[float], Any], lr: float, decay: float,
                plan: Plan | Mask | None = None, **group_options: Any) -> Any:
    """An ``optax.multi_transform`` with one ``make_tx(lr * scale)`` per layer group.

    Frozen leaves get ``optax.set_to_zero()`` (they only reach it if the full model is given).

    Example:
        >>> import jax.numpy as jnp, optax, frostline as fl
        >>> params = {"blocks": [{"w": jnp.ones(2)} for _ in range(3)]}
        >>> tx = fl.layer_decay(params, lambda lr: optax.adamw(lr), lr=1e-3, decay=0.75)
        >>> state = tx.init(params)
    """
    import optax

    labels, scales = layer_decay_labels(model, decay, plan, **group_options)
    transforms: Mapping[str, Any] = {label: make_tx(lr * scale) for label, scale in scales.items()}
    tx = optax.multi_transform({**transforms, FROZEN: optax.set_to_zero()}, labels)
    frozen = frozenset(name for name, label in labels.labels if label == FROZEN)
    if frozen:
        _FROZEN_LABELS[tx.init] = frozen
    return tx


# Leaves that a transformation made by layer_decay(..., plan=...) labels "frozen", by its init
# function, so fl.thaw can refuse to thaw them into set_to_zero.
_FROZEN_LABELS: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def check_labels_fit(tx: Any, trainable: Collection[str]) -> None:
    """Refuse a ``fl.layer_decay`` transformation that labels a trainable leaf "frozen".

    Args:
        tx: the optax transformation.
        trainable: names of the leaves that train now.

    Raises:
        PlanError: ``tx`` was built with a plan that froze leaves that now train.
    """
    init = getattr(tx, "init", None)
    frozen = _FROZEN_LABELS.get(init) if init is not None else None
    if not frozen:
        return
    thawed = sorted(set(trainable) & frozen)
    if thawed:
        raise PlanError(
            f"this optimizer was built by fl.layer_decay with a plan that labels {len(thawed)} "
            f"leaves that now train 'frozen' (first: '{thawed[0]}'), so they would never "
            "move. For gradual unfreezing build it without a plan: fl.layer_decay(model, "
            "make_tx, lr, decay) labels every leaf by its group, and frozen leaves are holes "
            "in the trainable part."
        )


def _resolved(model: Any, plan: Plan | Mask | None, group_options: dict[str, Any]) -> Resolved:
    """The model resolved once: its view, groups and mask (``None``: every parameter trains)."""
    return resolve(model, plan, Grouping(**group_options) if group_options else None)
