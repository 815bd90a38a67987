"""Model-level functions that work on any supported framework (the backend is picked per model)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ._report import Explanation, Summary
from .core._gc import paused_gc
from .core.backend import backend_for
from .core.groups import Groups
from .core.leaves import TreeView
from .core.mask import Mask
from .core.plan import GROUP_OPTIONS, Plan


def view(model: Any) -> TreeView:
    """The framework-neutral tree view of ``model``: its ordered parameters and buffers.

    Example:
        >>> import torch, frostline as fl
        >>> [leaf.name for leaf in fl.view(torch.nn.Linear(2, 2))]
        ['weight', 'bias']
    """
    return backend_for(model).view(model)


def groups(model: Any, *, coarse: bool = False, spec: Any = None, names: Any = None,
           example_input: Any = None, auto: bool = False, **options: Any) -> Groups:
    """The ordered layer groups of ``model``, from the input (0) to the head (n-1).

    Args:
        model: a PyTorch module or a JAX model (Equinox, Flax NNX, pytree).
        coarse: coarser groups where the model's own grouping offers them (timm).
        spec: explicit groups: a list of selectors, one per group, input first.
        names: names for the explicit groups.
        example_input: an input to trace (on the meta device) so groups follow execution order.
        auto: ignore the model's own grouping and detect stem / blocks / head automatically.
        **options: family options, e.g. ``tower="image"`` / ``"text"`` (a CLIP's tower, or any
            module path: the groups of that part, named from the root) or ``head_group=True``
            (OpenCLIP timm towers: the projection head as the top group).

    Returns:
        :class:`~frostline.core.groups.Groups`; ``.source`` and ``.notes`` say how they were found.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8),
        ...     *[torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()) for _ in range(3)],
        ...     torch.nn.Linear(8, 2))
        >>> fl.groups(net).names
        ['stem', '1', '2', '3', 'head']
    """
    backend = backend_for(model)
    return backend.groups(model, backend.view(model), coarse=coarse, spec=spec, names=names,
                          example_input=example_input, auto=auto, **options)


def apply(model: Any, plan: Plan, **group_options: Any) -> Any:
    """Apply ``plan`` to ``model`` (PyTorch: in place, and the model is returned)."""
    return plan.apply(model, **group_options)


def lock(model: Any, unlocked_groups: int = 0, freeze_bn_stats: bool = False,
         **group_options: Any) -> Plan:
    """Freeze every layer group but the last ``unlocked_groups``, as OpenCLIP's ``lock`` does.

    PyTorch models are changed in place (``requires_grad``; with ``freeze_bn_stats`` the
    BatchNorms of the frozen groups also keep their running statistics, even after
    ``model.train()``). Calling it again with another ``unlocked_groups`` re-locks cleanly.
    JAX models are immutable: use the returned plan's ``mask`` or ``fl.partition``.

    Args:
        model: the model.
        unlocked_groups: how many groups, counted from the head, stay trainable (0: all frozen).
        freeze_bn_stats: also fix BatchNorm statistics in the frozen groups.
        **group_options: passed to :func:`groups` (``coarse``, ``spec``, ``example_input``,
            ``tower`` ...). When the groups cover one part of the model (``Groups.scope``, e.g.
            ``tower="image"``), only that part is frozen, as OpenCLIP's ``lock_image_tower``.

    Returns:
        The :class:`Plan` that was applied.

    Raises:
        GroupError: ``unlocked_groups`` exceeds the number of groups (the message says how many).

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)])
        >>> _ = fl.lock(net, unlocked_groups=1)
        >>> [p.requires_grad for p in net.parameters()]
        [False, False, False, False, False, False, True, True]
    """
    Plan.lock(unlocked_groups, freeze_bn_stats)  # checks the arguments before any work
    backend = backend_for(model)
    with paused_gc():
        tree = backend.view(model)
        found = backend.groups(model, tree, **group_options)
        plan = Plan.lock(unlocked_groups, freeze_bn_stats, within=found.scope).with_groups(
            **_storable_group_options(group_options))
        backend.apply(model, plan.evaluate(tree, found), plan)
    return plan


def _storable_group_options(options: dict[str, Any]) -> dict[str, Any]:
    """The grouping options a plan can carry (selectors as strings; no example input)."""
    out = {k: v for k, v in options.items() if k in GROUP_OPTIONS and k != "spec"}
    spec = options.get("spec")
    if spec is not None:
        texts = [s if isinstance(s, str) else s.to_string() for s in spec]
        if not any(text.startswith("<where") for text in texts):
            out["spec"] = texts
    return out


def mask(model: Any, plan: Plan, **group_options: Any) -> Mask:
    """Evaluate ``plan`` on ``model`` without changing it: the framework-neutral mask."""
    return plan.mask_on(model, **group_options)


def explain(model: Any, plan: Plan, **options: Any) -> Explanation:
    """Which rule of ``plan`` decides each parameter of ``model``."""
    return plan.explain(model, **options)


def summary(model: Any, plan: Plan | None = None, **group_options: Any) -> Summary:
    """Per-group parameter counts and what trains now (or under ``plan``, when given).

    ``str()`` of the result is a table and a line such as ``trainable 1,234 / 5,678 (21.7%)``.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)])
        >>> _ = fl.lock(net, unlocked_groups=1)
        >>> fl.summary(net).total_line
        'trainable 20 / 80 (25.0%)'
    """
    backend = backend_for(model)
    tree = backend.view(model)
    options = {**plan.group_options, **group_options} if plan is not None else group_options
    found = backend.groups(model, tree, **options)
    if plan is not None:
        evaluated = plan.evaluate(tree, found)
        trainable = evaluated.as_dict()
        frozen_stats = set(evaluated.frozen_stats)
    else:
        trainable = {leaf.name: bool(leaf.trainable) for leaf in tree}
        stats = getattr(backend, "frozen_stats", None)
        frozen_stats = stats(model) if stats else set()
    return Summary.build(tree, found, trainable, frozen_stats)


def partition(model: Any, plan: Plan | Mask | None = None, **group_options: Any) -> tuple[Any, Any]:
    """Split ``model`` into (trainable, frozen) parts by ``plan`` (default: current state).

    JAX: two pytrees of the model's structure with ``None`` holes, as ``eqx.partition`` gives.
    Partition once, outside the jitted step (evaluating the plan is Python work), differentiate
    the trainable part only, and ``fl.combine`` the halves inside the step.
    PyTorch: two ``{name: tensor}`` dicts for ``fl.functional_call`` / ``torch.func``.
    """
    backend = backend_for(model)
    if not hasattr(backend, "partition"):
        from ._errors import BackendError

        raise BackendError(f"the {backend.name} backend has no partition.")
    return backend.partition(model, plan, **group_options)


def combine(trainable: Any, frozen: Any) -> Any:
    """Put the two halves made by :func:`partition` back together."""
    backend = backend_for(_first_leaf(trainable, frozen))
    return backend.combine(trainable, frozen)


def _first_leaf(*parts: Any) -> Any:
    """What ``combine`` dispatches on: a model itself, else the first value that is not ``None``
    inside nested dicts, lists and tuples (PyTorch's ``{name: tensor}`` dicts; JAX pytrees,
    whose ``None`` holes mark the other half's leaves)."""
    for part in parts:
        if isinstance(part, dict):
            found = _first_leaf(*part.values())
        elif isinstance(part, (list, tuple)):
            found = _first_leaf(*part)
        else:
            found = part
        if found is not None:
            return found
    return None


def snapshot(model: Any, plan: Plan | None = None, *, buffers: bool = True,
             optimizer: Any = None) -> Any:
    """Fingerprint ``model`` now, so a later ``.check()`` proves frozen tensors did not move.

    Args:
        model: the model (PyTorch module, or a JAX model/pytree).
        plan: which leaves count as frozen (default: the model's current state).
        buffers: watch the running statistics of BatchNorms whose statistics are fixed or whose
            parameters are frozen (``False``: parameters only).
        optimizer: PyTorch: also require that the optimizer holds every trainable parameter
            and no frozen one (checked now and at ``check()``).

    Returns:
        A snapshot object with ``check(model=None, *, require_trainable_moved=False)`` that
        raises :class:`GuardError` naming every frozen tensor that moved.

    Raises:
        GuardError: ``optimizer`` holds a frozen parameter or misses a trainable one.
    """
    backend = backend_for(model)
    if not hasattr(backend, "snapshot"):
        from ._errors import BackendError

        raise BackendError(f"the {backend.name} backend has no guard.")
    return backend.snapshot(model, plan, buffers=buffers, optimizer=optimizer)


@contextlib.contextmanager
def guard(model: Any, plan: Plan | None = None, *, buffers: bool = True,
          require_trainable_moved: bool = False, optimizer: Any = None) -> Iterator[Any]:
    """Raise :class:`GuardError` after the block if any frozen tensor of ``model`` moved.

    JAX models are immutable: hand the trained model to the yielded snapshot inside the block
    (``model = snap.update(new_model)``); Flax NNX modules change in place and need nothing.
    Arguments as :func:`snapshot`; ``require_trainable_moved`` also requires every trainable
    parameter to have moved.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Linear(2, 2)
        >>> _ = net.bias.requires_grad_(False)
        >>> with fl.guard(net):
        ...     net(torch.ones(1, 2)).sum().backward()
    """
    snap = snapshot(model, plan, buffers=buffers, optimizer=optimizer)
    yield snap
    snap.check(require_trainable_moved=require_trainable_moved)
