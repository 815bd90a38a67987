"""Model-level functions that work on any supported framework (the backend is picked per model).

Each starts from one :func:`resolve` of the model and reads what it needs from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from ._errors import BackendError, PlanError
from ._report import Explanation, Summary
from .core.groups import Grouping, Groups
from .core.leaves import TreeView
from .core.mask import Mask
from .core.plan import Plan
from .core.resolve import Resolved, resolve
from .core.selectors import Selector, path


def view(model: Any) -> TreeView:
    """The framework-neutral tree view of ``model``: its ordered parameters and buffers.

    Example:
        >>> import torch, frostline as fl
        >>> [leaf.name for leaf in fl.view(torch.nn.Linear(2, 2))]
        ['weight', 'bias']
    """
    return resolve(model).view


def groups(model: Any, grouping: Grouping | None = None, *, coarse: bool | None = None,
           auto: bool | None = None, tower: str | None = None, head_group: bool | None = None,
           spec: Sequence[Selector | str] | None = None, names: Sequence[str] | None = None,
           example_input: Any = None) -> Groups:
    """The ordered layer groups of ``model``, from the input (0) to the head (n-1).

    Args:
        model: a PyTorch module (wrappers such as ``torch.compile`` are looked through) or a
            JAX model (Equinox, Flax NNX, pytree).
        grouping: a :class:`Grouping`; the keyword arguments below set its fields.
        coarse: coarser groups where the model's own grouping offers them (timm).
        auto: ignore the model's own grouping and detect stem / blocks / head automatically.
        tower: ``"image"`` / ``"text"`` (a CLIP's tower), or any module path: the groups of
            that part, named from the root.
        head_group: OpenCLIP timm towers: the projection head as the top group.
        spec: explicit groups: a list of selectors, one per group, input first.
        names: names for the explicit groups.
        example_input: an input to trace (on the meta device) so groups follow execution order.

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
    chosen = _grouping(grouping, coarse=coarse, auto=auto, tower=tower, head_group=head_group,
                       spec=spec, names=names, example_input=example_input)
    return resolve(model, grouping=chosen).groups


def _grouping(grouping: Grouping | None, **fields: Any) -> Grouping:
    return Grouping(**{k: v for k, v in fields.items() if v is not None}).over(
        grouping or Grouping())


def apply(model: Any, plan: Plan, grouping: Grouping | None = None) -> Any:
    """Make ``plan`` true on ``model`` and return the model.

    PyTorch: sets ``requires_grad`` and fixes (or releases) BatchNorm statistics in place,
    on the inner model of a ``torch.compile`` / ``DataParallel`` / DDP wrapper. JAX models are
    immutable: the plan is checked and the model returned; use ``fl.partition``,
    ``fl.filter_spec`` or the optax helpers to make it take effect.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)])
        >>> _ = fl.apply(net, fl.Plan().freeze("**").unfreeze("group:-1:"))
        >>> [n for n, p in net.named_parameters() if p.requires_grad]
        ['2.weight', '2.bias']
    """
    _require_plan(plan)
    return _apply(resolve(model, plan, grouping))


def _apply(resolved: Resolved) -> Any:
    return resolved.backend.apply(resolved)


def lock(model: Any, unlocked_groups: int = 0, freeze_bn_stats: bool = False,
         grouping: Grouping | None = None, *, tower: str | None = None,
         coarse: bool | None = None, spec: Sequence[Selector | str] | None = None,
         example_input: Any = None) -> Plan:
    """Freeze every layer group but the last ``unlocked_groups``, as OpenCLIP's ``lock`` does.

    PyTorch models are changed in place (``requires_grad``; with ``freeze_bn_stats`` the
    BatchNorms of the frozen groups also keep their running statistics, even after
    ``model.train()``). Calling it again with another ``unlocked_groups`` re-locks cleanly.
    When the groups cover one part of the model (``tower="image"``, ``Groups.scope``), the lock
    is scoped to that part and leaves the rest as it is: locking the image tower, then the text
    tower, is OpenCLIP's ``lock_image_tower`` then ``lock_text_tower``. JAX models are
    immutable: use the returned plan with ``fl.partition`` or ``fl.filter_spec``.

    Args:
        model: the model (a ``torch.compile`` / ``DataParallel`` / DDP wrapper is looked through).
        unlocked_groups: how many groups, counted from the head, stay trainable (0: all frozen).
        freeze_bn_stats: also fix BatchNorm statistics in the frozen groups.
        grouping: how to build the groups (:class:`Grouping`); ``tower``, ``coarse``, ``spec``
            and ``example_input`` set its most used fields.

    Returns:
        The :class:`Plan` that was applied (its grouping and scope included).

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
    chosen = _grouping(grouping, tower=tower, coarse=coarse, spec=spec,
                       example_input=example_input)
    resolved = resolve(model, grouping=chosen)
    found = resolved.groups
    plan = Plan.lock(unlocked_groups, freeze_bn_stats,
                     scope=path(*found.scope) if found.scope else None)
    plan = replace(plan, grouping=_storable(chosen))
    _apply(replace(resolved, plan=plan))
    return plan


def _storable(grouping: Grouping) -> Grouping:
    """The part of ``grouping`` a plan can carry to a file (no example input, no predicates)."""
    stored = grouping.without_input()
    try:
        stored.to_dict()
    except PlanError:
        return replace(stored, spec=None, names=None)
    return stored


def mask(model: Any, plan: Plan, grouping: Grouping | None = None) -> Mask:
    """Evaluate ``plan`` on ``model`` without changing it: the framework-neutral :class:`Mask`.

    Example:
        >>> import torch, frostline as fl
        >>> fl.mask(torch.nn.Linear(2, 2), fl.Plan().freeze("name:bias")).frozen_names()
        ['bias']
    """
    _require_plan(plan)
    return resolve(model, plan, grouping).mask


def filter_spec(model: Any, plan: Plan | Mask | None = None,
                grouping: Grouping | None = None) -> Any:
    """``plan``'s mask in the framework's own form.

    Equinox modules and pytrees: a filter spec (a bool pytree, True = trainable) for
    ``eqx.partition``; Flax NNX: an NNX filter; PyTorch: ``{parameter name: trainable}``.

    Example:
        >>> import torch, frostline as fl
        >>> fl.filter_spec(torch.nn.Linear(2, 2), fl.Plan().freeze("name:bias"))
        {'weight': True, 'bias': False}
    """
    resolved = resolve(model, plan, grouping)
    return resolved.backend.native_mask(resolved.model, resolved.mask)


def explain(model: Any, plan: Plan, grouping: Grouping | None = None, *,
            buffers: bool = False) -> Explanation:
    """Which rule of ``plan`` decides each parameter of ``model`` (and buffer, with ``buffers``).

    Example:
        >>> import torch, frostline as fl
        >>> rows = fl.explain(torch.nn.Linear(2, 2), fl.Plan().freeze("name:bias")).rows
        >>> [(r.name, r.trainable, r.decided_by) for r in rows]
        [('weight', True, 'no rule: trainable by default'), ('bias', False, 'rule 0: freeze name:bias')]
    """
    _require_plan(plan)
    return Explanation.of(resolve(model, plan, grouping), buffers=buffers)


def summary(model: Any, plan: Plan | None = None, grouping: Grouping | None = None) -> Summary:
    """Per-group parameter counts and what trains now (or under ``plan``, when given).

    ``str()`` of the result is a table and a line such as ``trainable 1,234 / 5,678 (21.7%)``.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)])
        >>> _ = fl.lock(net, unlocked_groups=1)
        >>> fl.summary(net).total_line
        'trainable 20 / 80 (25.0%)'
    """
    return Summary.of(resolve(model, plan, grouping))


def partition(model: Any, plan: Plan | Mask | None = None,
              grouping: Grouping | None = None) -> tuple[Any, Any]:
    """Split ``model`` into (trainable, frozen) parts by ``plan`` (default: current state).

    JAX: two pytrees of the model's structure with ``None`` holes, as ``eqx.partition`` gives.
    Partition once, outside the jitted step (evaluating the plan is Python work), differentiate
    the trainable part only, and ``fl.combine`` the halves inside the step.
    PyTorch: two ``{name: tensor}`` dicts for ``fl.functional_call`` / ``torch.func``.
    """
    resolved = resolve(model, plan, grouping)
    split = getattr(resolved.backend, "partition", None)
    if split is None:
        raise BackendError(f"the {resolved.backend.name} backend has no partition.")
    halves: tuple[Any, Any] = split(resolved)
    return halves


def combine(trainable: Any, frozen: Any) -> Any:
    """Put the two halves made by :func:`partition` back together."""
    from .core.backend import backend_for

    backend = backend_for(_first_leaf(trainable, frozen))
    join = getattr(backend, "combine", None)
    if join is None:
        raise BackendError(f"the {backend.name} backend has no combine.")
    return join(trainable, frozen)


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


def snapshot(model: Any, plan: Plan | Mask | None = None, *, buffers: bool = True,
             grouping: Grouping | None = None, optimizer: Any = None) -> Any:
    """Fingerprint ``model`` now, so a later ``.check()`` proves frozen tensors did not move.

    Args:
        model: the model (PyTorch module, or a JAX model/pytree).
        plan: which leaves count as frozen (default: the model's current state).
        buffers: watch the running statistics of BatchNorms whose statistics are fixed or whose
            parameters are frozen (``False``: parameters only).
        grouping: how to build the groups the plan's group selectors refer to.
        optimizer: PyTorch: also require that the optimizer holds every trainable parameter
            and no frozen one (checked now and at ``check()``).

    Returns:
        A snapshot object with ``check(model=None, *, require_trainable_moved=False)`` that
        raises :class:`GuardError` naming every frozen tensor that moved.

    Raises:
        GuardError: ``optimizer`` holds a frozen parameter or misses a trainable one.
    """
    resolved = resolve(model, plan, grouping)
    if not hasattr(resolved.backend, "snapshot"):
        raise BackendError(f"the {resolved.backend.name} backend has no guard.")
    return resolved.backend.snapshot(resolved, buffers=buffers, optimizer=optimizer)


@contextlib.contextmanager
def guard(model: Any, plan: Plan | Mask | None = None, *, buffers: bool = True,
          require_trainable_moved: bool = False,
          grouping: Grouping | None = None, optimizer: Any = None) -> Iterator[Any]:
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
    snap = snapshot(model, plan, buffers=buffers, grouping=grouping, optimizer=optimizer)
    yield snap
    snap.check(require_trainable_moved=require_trainable_moved)


def _require_plan(plan: Any) -> None:
    if not isinstance(plan, Plan):
        raise PlanError(f"expected a frostline Plan, got a {type(plan).__name__}; build one with "
                        "fl.Plan(), fl.Plan.lock(k) or fl.Plan.load(path).")
