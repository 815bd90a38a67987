"""Plans: ordered freeze/unfreeze rules that decide which leaves train.

A plan is data. Rules apply in order and the last matching rule wins; a leaf no rule matches
stays trainable. A plan also carries the BatchNorm policy, how its groups are built
(:class:`~frostline.core.groups.Grouping`), an optional scope (the part of the model it decides)
and the plans that follow it (``a + b``). It round-trips through dict, JSON and YAML (safe
loading only) and never calls a backend: ``fl.resolve`` evaluates it on a model.

Example:
    >>> plan = Plan().freeze("**").unfreeze("group:-2:").freeze("name:bias")
    >>> print(plan)
    Plan(freeze **, unfreeze group:-2:, freeze name:bias)
    >>> Plan.from_yaml(plan.to_yaml()) == plan
    True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from .._errors import PlanError, SelectorError, TiedWeightError, show
from ._textfiles import load_json_text, load_yaml_text, read_plan_file
from .groups import Grouping, Groups
from .leaves import PARAM, TreeView
from .mask import Mask
from .norms import STAT_NAMES, held_by_norm, is_batchnorm, keeps_stats_outside
from .selectors import MatchContext, Selector, as_selector, explain_empty

FREEZE = "freeze"
UNFREEZE = "unfreeze"
ACTIONS = (FREEZE, UNFREEZE)
SCHEMA_VERSION = 1
_MAX_GROUPS = 1_000_000  # a bound for numbers read from files (messages print them)
_PLAN_KEYS = ("version", "rules", "freeze_bn_stats", "train_bn", "unlocked_groups", "groups",
              "scope", "then")


@dataclass(frozen=True)
class Rule:
    """One ``freeze``/``unfreeze`` step of a plan.

    Attributes:
        action: "freeze" or "unfreeze".
        selector: which leaves the rule touches.
        allow_empty: when False (the default), the rule must match at least one leaf.
    """

    action: str
    selector: Selector
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise PlanError(f"unknown rule action {self.action!r}: expected 'freeze' or 'unfreeze'.")

    def __str__(self) -> str:
        suffix = " (may match nothing)" if self.allow_empty else ""
        return f"{self.action} {self.selector}{suffix}"


@dataclass(frozen=True)
class Plan:
    """Ordered freeze/unfreeze rules (last match wins), plus the BatchNorm policy.

    A plan is data: it never touches a model. ``fl.resolve(model, plan)`` evaluates it, and
    ``fl.apply`` / ``fl.lock`` make the result true on the model.

    Attributes:
        rules: the rules in order.
        freeze_bn_stats: fix the running statistics of every BatchNorm whose statistics the rules
            freeze (it stays in eval mode even after ``model.train()``), as OpenCLIP's lock does.
        train_bn: keep the affine parameters of normalisation layers trainable inside frozen parts
            (fastai's ``train_bn``); independent of ``freeze_bn_stats``.
        unlocked_groups: set by :meth:`lock`; checked against the model's number of groups.
        grouping: how to build the groups that ``group:`` selectors refer to (:class:`Grouping`);
            a grouping passed when the plan is resolved overrides the fields it sets.
        scope: when set, the plan decides only the leaves this selector matches; every other
            leaf keeps the state it had (a tower lock leaves the other tower alone). ``None``:
            the whole model, and leaves no rule matches are trainable.
        then: plans applied after this one, in order (``plan_a + plan_b``).
    """

    rules: tuple[Rule, ...] = ()
    freeze_bn_stats: bool = False
    train_bn: bool = False
    unlocked_groups: int | None = field(default=None)
    grouping: Grouping = field(default_factory=Grouping)
    scope: Selector | None = None
    then: tuple[Plan, ...] = ()

    # --- building ------------------------------------------------------------------------------

    def freeze(self, selector: Selector | str, *, allow_empty: bool = False) -> Plan:
        """Return a plan with a rule that freezes ``selector`` appended."""
        return self._last_step_with(Rule(FREEZE, as_selector(selector), allow_empty))

    def unfreeze(self, selector: Selector | str, *, allow_empty: bool = False) -> Plan:
        """Return a plan with a rule that makes ``selector`` trainable appended."""
        return self._last_step_with(Rule(UNFREEZE, as_selector(selector), allow_empty))

    def _last_step_with(self, rule: Rule) -> Plan:
        if self.then:
            last = self.then[-1]
            return replace(self, then=(*self.then[:-1], replace(last, rules=(*last.rules, rule))))
        return replace(self, rules=(*self.rules, rule))

    def with_bn(self, *, freeze_bn_stats: bool | None = None, train_bn: bool | None = None) -> Plan:
        """Return a plan with another BatchNorm policy."""
        return replace(
            self,
            freeze_bn_stats=self.freeze_bn_stats if freeze_bn_stats is None else freeze_bn_stats,
            train_bn=self.train_bn if train_bn is None else train_bn,
        )

    def with_grouping(self, grouping: Grouping | None = None, **fields: Any) -> Plan:
        """Return a plan whose groups are built with ``grouping`` (and/or the given fields).

        Fields set here override the plan's own grouping; the others are kept.

        Example:
            >>> Plan.lock(2).with_grouping(coarse=True).grouping.options()
            {'coarse': True}
        """
        given = Grouping(**fields).over(grouping or Grouping())
        return replace(self, grouping=given.over(self.grouping))

    def within(self, scope: Selector | str | None) -> Plan:
        """Return the plan limited to ``scope``: leaves outside it keep their state.

        Example:
            >>> print(Plan().freeze("**").within("visual"))
            Plan(freeze **; scope visual)
        """
        return replace(self, scope=None if scope is None else as_selector(scope))

    def __add__(self, other: Plan) -> Plan:
        """``a + b``: apply ``a``, then ``b`` (each with its own scope, policy and grouping).

        Example:
            >>> both = Plan.lock(0, scope="visual") + Plan.lock(0, scope="transformer")
            >>> len(both.steps), str(both.steps[1])
            (2, 'Plan(freeze **; unlocked_groups=0, scope transformer)')
        """
        if not isinstance(other, Plan):
            return NotImplemented
        return replace(self, then=(*self.then, *other.steps))

    @property
    def steps(self) -> tuple[Plan, ...]:
        """The plans applied in order: this one (without ``then``) and each in ``then``."""
        return (replace(self, then=()), *self.then)

    @property
    def all_rules(self) -> tuple[Rule, ...]:
        """The rules of every step, in order (``Mask.decided_by`` indexes into this)."""
        return tuple(rule for step in self.steps for rule in step.rules)

    @classmethod
    def lock(cls, unlocked_groups: int = 0, freeze_bn_stats: bool = False,
             scope: Selector | str | None = None) -> Plan:
        """OpenCLIP's lock as a plan: freeze everything but the last ``unlocked_groups`` groups.

        ``scope`` limits the lock to one part of the model and leaves the rest as it is, as
        OpenCLIP's ``lock_image_tower`` leaves the text tower alone.

        Example:
            >>> print(Plan.lock(2, freeze_bn_stats=True))
            Plan(freeze **, unfreeze group:-2:; freeze_bn_stats, unlocked_groups=2)
            >>> print(Plan.lock(1, scope="visual"))
            Plan(freeze **, unfreeze group:-1:; unlocked_groups=1, scope visual)
        """
        if isinstance(unlocked_groups, bool) or not isinstance(unlocked_groups, int) or (
            unlocked_groups < 0
        ):
            raise PlanError(
                f"unlocked_groups must be a non-negative int, got {unlocked_groups!r}; "
                "0 freezes every group, k keeps the last k groups trainable."
            )
        if type(freeze_bn_stats) is not bool:
            raise PlanError(f"freeze_bn_stats must be True or False, got {freeze_bn_stats!r}.")
        from .selectors import everything, group

        rules = [Rule(FREEZE, everything())]
        if unlocked_groups:
            rules.append(Rule(UNFREEZE, group(slice(-unlocked_groups, None))))
        return cls(tuple(rules), freeze_bn_stats=freeze_bn_stats, unlocked_groups=unlocked_groups,
                   scope=None if scope is None else as_selector(scope))

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, view: TreeView, groups: Groups | GroupSource | None = None, *,
                 start: Mask | None = None) -> Mask:
        """Evaluate the plan on a tree view: one trainable flag per leaf, True = trainable.

        Args:
            view: the model's tree view.
            groups: the layer groups, or a function from a :class:`Grouping` to groups (called
                only when a step needs groups).
            start: the state the plan starts from (default: the view's current state); only
                leaves outside a scoped plan keep it.

        Raises:
            SelectorError: a rule matches nothing (unless it allows that), with the closest names.
            GroupError: ``unlocked_groups`` exceeds the number of groups, or is positive on a
                model that is one group (the lock would freeze nothing).
            TiedWeightError: two paths of one shared tensor end up in different states.
        """
        state = start if start is not None else current_state(view)
        offset = 0
        for step in self.steps:
            state = step._evaluate_step(view, _groups_for(groups, step.grouping), state, offset)
            offset += len(step.rules)
        return state

    def _evaluate_step(self, view: TreeView, groups: Callable[[], Groups], start: Mask,
                       offset: int) -> Mask:
        ctx = MatchContext(view, groups)
        if self.unlocked_groups is not None and self.unlocked_groups > len(ctx.groups):
            from .._errors import GroupError

            raise GroupError(
                f"cannot unlock {self.unlocked_groups} groups: the model has {len(ctx.groups)} "
                f"groups ({', '.join(ctx.groups.names)}); use 0..{len(ctx.groups)}."
            )
        if self.unlocked_groups and len(ctx.groups) == 1:
            from .._errors import GroupError

            raise GroupError(
                f"cannot unlock {self.unlocked_groups} of the model's groups: it is one group "
                f"({'; '.join(ctx.groups.notes) or ctx.groups.source}), so the lock would train "
                "everything and freeze nothing. Name the groups (spec=[selector, ...]), pass "
                "example_input= so layers are ordered as they run, or write the plan with "
                "freeze/unfreeze rules."
            )
        inside = self._inside(ctx)
        trainable = [True if inside[i] else start.trainable[i] for i in range(len(view))]
        decided_by: list[int | None] = [
            None if inside[i] else _kept(start.decided_by, i) for i in range(len(view))]
        for rule_index, rule in enumerate(self.rules, start=offset):
            hits = rule.selector.select(ctx)
            if self.scope is not None:
                hits = [hit and inside[i] for i, hit in enumerate(hits)]
            if not rule.allow_empty and not any(hits) and len(view):
                where = " within the plan's scope" if self.scope is not None else ""
                raise SelectorError(
                    f"rule {rule_index} ({rule}) matches nothing{where} in this model: "
                    f"{explain_empty(rule.selector, ctx)}. Fix the selector, or pass "
                    "allow_empty=True for a rule that may legitimately match nothing."
                )
            value = rule.action == UNFREEZE
            for i, hit in enumerate(hits):
                if hit:
                    trainable[i] = value
                    decided_by[i] = rule_index
        # Statistics follow the rules alone: train_bn trains affine parameters, never statistics.
        frozen_stats = fixed_statistics(view, trainable, inside, self.freeze_bn_stats,
                                        start.frozen_stats)
        if self.train_bn:
            for i, leaf in enumerate(view):
                if inside[i] and leaf.kind == PARAM and not trainable[i] and held_by_norm(leaf):
                    trainable[i] = True
                    decided_by[i] = Mask.TRAIN_BN
        for i, leaf in enumerate(view):
            if leaf.kind == PARAM and trainable[i] and not leaf.is_floating:
                trainable[i] = False
                decided_by[i] = Mask.NOT_FLOATING
        _check_ties(view, trainable, decided_by, self, offset)
        return Mask(
            names=view.names,
            trainable=tuple(trainable),
            decided_by=tuple(decided_by),
            frozen_stats=frozen_stats,
        )

    def _inside(self, ctx: MatchContext) -> list[bool]:
        if self.scope is None:
            return [True] * len(ctx.view)
        inside = self.scope.select(ctx)
        if not any(inside) and len(ctx.view):
            raise SelectorError(
                f"the plan's scope ({self.scope}) matches nothing in this model: "
                f"{explain_empty(self.scope, ctx)}. Fix the scope selector."
            )
        return inside

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (schema version 1) that :meth:`from_dict` reads back."""
        rules = []
        for rule in self.rules:
            entry: dict[str, Any] = {rule.action: _selector_text(rule.selector)}
            if rule.allow_empty:
                entry["allow_empty"] = True
            rules.append(entry)
        out: dict[str, Any] = {"version": SCHEMA_VERSION, "rules": rules}
        out["freeze_bn_stats"] = self.freeze_bn_stats
        out["train_bn"] = self.train_bn
        if self.unlocked_groups is not None:
            out["unlocked_groups"] = self.unlocked_groups
        if not self.grouping.is_default:
            out["groups"] = self.grouping.to_dict()
        if self.scope is not None:
            out["scope"] = _selector_text(self.scope)
        if self.then:
            out["then"] = [{k: v for k, v in step.to_dict().items() if k != "version"}
                           for step in self.then]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Read a plan dict, checking keys, types and the schema version."""
        if not isinstance(data, Mapping):
            raise PlanError(f"a plan must be a mapping with 'rules', got {type(data).__name__}.")
        unknown = [key for key in data if key not in _PLAN_KEYS]
        if unknown:
            raise PlanError(f"unknown plan keys {show(unknown)}; allowed keys are "
                            f"{list(_PLAN_KEYS)}.")
        version = data.get("version", SCHEMA_VERSION)
        if type(version) is not int or version != SCHEMA_VERSION:  # true and 1.0 are not 1
            raise PlanError(
                f"plan schema version {show(version)} is not supported; this frostline reads "
                f"version {SCHEMA_VERSION}."
            )
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise PlanError(f"'rules' must be a list, got {type(raw_rules).__name__}.")
        rules = tuple(_rule_from_dict(i, entry) for i, entry in enumerate(raw_rules))
        unlocked = data.get("unlocked_groups")
        if unlocked is not None and (isinstance(unlocked, bool) or not isinstance(unlocked, int)
                                     or unlocked < 0):
            raise PlanError(f"'unlocked_groups' must be a non-negative int, got {show(unlocked)}.")
        if unlocked is not None and unlocked > _MAX_GROUPS:
            raise PlanError(f"'unlocked_groups' is {show(unlocked)}; no model has more than "
                            f"{_MAX_GROUPS} groups.")
        scope = data.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise PlanError(f"'scope' must be a selector string, got {show(scope)}.")
        try:
            scope_selector = None if scope is None else as_selector(scope)
        except SelectorError as exc:
            raise PlanError(f"scope: {exc}") from None
        raw_then = data.get("then", [])
        if not isinstance(raw_then, list):
            raise PlanError(f"'then' must be a list of plans, got {type(raw_then).__name__}.")
        then: list[Plan] = []
        for step in raw_then:
            if isinstance(step, Mapping) and "then" in step:
                raise PlanError("a step in 'then' cannot have its own 'then'; list every step "
                                "in the top-level 'then'.")
            then.append(cls.from_dict(step))
        return cls(
            rules,
            freeze_bn_stats=_flag(data, "freeze_bn_stats"),
            train_bn=_flag(data, "train_bn"),
            unlocked_groups=unlocked,
            grouping=Grouping.from_dict(data.get("groups", {})),
            scope=scope_selector,
            then=tuple(then),
        )

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """Read a JSON plan (size, depth and encoding checked: see ``core/_textfiles.py``)."""
        return cls.from_dict(load_json_text(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str | bytes) -> Plan:
        """Read a YAML plan with safe tags only (no code runs while loading), refusing anchors
        and aliases, and bounding size and depth (see ``core/_textfiles.py``)."""
        return cls.from_dict(load_yaml_text(text))

    def save(self, path: str) -> None:
        """Write the plan as YAML (``.yaml``/``.yml``) or JSON (anything else).

        Raises:
            PlanError: the file cannot be written (no such folder, a folder, no permission).
        """
        text = self.to_yaml() if str(path).endswith((".yaml", ".yml")) else self.to_json(indent=2)
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise PlanError(f"cannot write the plan to {show(str(path))}: "
                            f"{exc.strerror or type(exc).__name__}; pass a file path in a "
                            "folder that exists and is writable.") from None

    @classmethod
    def load(cls, path: str) -> Plan:
        """Read a plan file written by :meth:`save` (YAML or JSON; UTF-8, or UTF-16/32 with a
        byte-order mark)."""
        text = read_plan_file(path)
        return cls.from_json(text) if str(path).endswith(".json") else cls.from_yaml(text)

    def __str__(self) -> str:
        if self.then:
            return " + ".join(str(step) for step in self.steps)
        body = ", ".join(str(rule) for rule in self.rules) or "everything trainable"
        flags = [name for name in ("freeze_bn_stats", "train_bn") if getattr(self, name)]
        if self.unlocked_groups is not None:
            flags.append(f"unlocked_groups={self.unlocked_groups}")
        if not self.grouping.is_default:
            flags.append("groups(" + ", ".join(
                f"{k}={v!r}" for k, v in self.grouping.to_dict().items()) + ")")
        if self.scope is not None:
            flags.append(f"scope {self.scope}")
        return f"Plan({body}" + ("; " + ", ".join(flags) if flags else "") + ")"


GroupSource = Callable[[Grouping], Groups]


def _groups_for(groups: Groups | GroupSource | None, grouping: Grouping) -> Callable[[], Groups]:
    """A zero-argument function giving the groups of one plan step (computed on first use)."""
    if groups is None or isinstance(groups, Groups):
        return lambda: groups  # type: ignore[return-value]
    return lambda: groups(grouping)


def current_state(view: TreeView) -> Mask:
    """The state a model is in now, as a mask: ``requires_grad`` (True where unknown) and the
    BatchNorms whose statistics are fixed (``TreeView.frozen_stats``)."""
    fixed = view.frozen_stats
    trainable = tuple(
        (leaf.trainable is not False) if leaf.kind == PARAM else leaf.module_path not in fixed
        for leaf in view)
    return Mask(view.names, trainable, (Mask.KEPT,) * len(view),
                tuple(path for path in view.all_module_paths if path in fixed))


def _kept(decided_by: tuple[int | None, ...], index: int) -> int | None:
    return decided_by[index] if decided_by else Mask.KEPT


def fixed_statistics(view: TreeView, trainable: list[bool], inside: list[bool],
                     freeze_bn_stats: bool, before: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The one definition of which BatchNorms keep fixed running statistics after a plan.

    A BatchNorm inside the plan's scope has fixed statistics when the plan has
    ``freeze_bn_stats`` and its rules freeze every one of its statistics leaves (``train_bn``
    does not change that: it trains affine parameters only). Where no leaf holds the
    statistics (Equinox keeps them in an ``eqx.nn.State``), the BatchNorm's parameters stand
    for them, as the rules decide them (before ``train_bn``). A BatchNorm outside the scope
    keeps what it had (``before``). Both backends and every consumer read this result.

    Example:
        >>> from frostline.core.leaves import Leaf, Owner, TreeView
        >>> class BatchNorm1d: pass
        >>> bn = (Owner("", object), Owner("bn", BatchNorm1d))
        >>> view = TreeView((Leaf("bn.running_mean", ("bn", "running_mean"), bn, (3,),
        ...                       "float32", kind="buffer"),))
        >>> fixed_statistics(view, [False], [True], freeze_bn_stats=True)
        ('bn',)
    """
    state: dict[str, bool] = {}
    for i, leaf in enumerate(view):
        if not leaf.owners or not is_batchnorm(leaf.owners[-1]):
            continue
        if leaf.path[-1] in STAT_NAMES or keeps_stats_outside(leaf.owners[-1]):
            module = leaf.module_path
            if not inside[i]:
                state[module] = module in before
            else:
                state[module] = state.get(module, True) and freeze_bn_stats and not trainable[i]
    kept = [module for module in before if module not in state]
    return (*kept, *(module for module, fixed in state.items() if fixed))


def _selector_text(selector: Selector) -> str:
    text = selector.to_string()
    if text.startswith("<where"):
        raise PlanError(
            f"selector {text} is a Python predicate and cannot be written to a file; "
            "express it with the string syntax (name:, type:, re:, ...) to save the plan."
        )
    return text


def _rule_from_dict(index: int, entry: Any) -> Rule:
    if not isinstance(entry, Mapping):
        raise PlanError(
            f"rule {index} must be a mapping like {{freeze: 'name:bias'}}, got {show(entry)}."
        )
    actions = [key for key in entry if key in ACTIONS]
    extra = [key for key in entry if key not in (*ACTIONS, "allow_empty")]
    if len(actions) != 1 or extra:
        raise PlanError(
            f"rule {index} must have exactly one of 'freeze'/'unfreeze' (and optionally "
            f"'allow_empty'), got keys "
            f"{show(sorted(k if isinstance(k, str) else show(k) for k in entry))}."
        )
    action = actions[0]
    text = entry[action]
    if not isinstance(text, str):
        raise PlanError(f"rule {index}: the selector must be a string, got {show(text)}.")
    allow_empty = entry.get("allow_empty", False)
    if not isinstance(allow_empty, bool):
        raise PlanError(f"rule {index}: 'allow_empty' must be true or false, got "
                        f"{show(allow_empty)}.")
    try:
        return Rule(action, as_selector(text), allow_empty)
    except SelectorError as exc:
        raise PlanError(f"rule {index}: {exc}") from None


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise PlanError(f"'{key}' must be true or false, got {show(value)}.")
    return value


def _check_ties(view: TreeView, trainable: list[bool], decided_by: list[int | None],
                plan: Plan, offset: int = 0) -> None:
    canonical = view.canonical
    first_index: dict[str, int] = {}
    for i, leaf in enumerate(view):
        if not leaf.tied_to:
            continue
        root = canonical[leaf.name]
        j = first_index.setdefault(root, i)
        if trainable[i] != trainable[j]:
            other = view.leaves[j]
            raise TiedWeightError(
                f"'{other.name}' and '{leaf.name}' are the same (shared) tensor, but the plan "
                f"makes '{other.name}' {_state(trainable[j])} "
                f"({describe_decision(plan, decided_by[j], offset)}) and '{leaf.name}' "
                f"{_state(trainable[i])} ({describe_decision(plan, decided_by[i], offset)}). "
                "Select both paths in the same rule, or untie the weights."
            )


def _state(trainable: bool) -> str:
    return "trainable" if trainable else "frozen"


def describe_decision(plan: Plan, index: int | None, offset: int = 0) -> str:
    """What decided a leaf, in words, from a :class:`Mask` ``decided_by`` entry.

    ``offset``: when ``plan`` is one step of a larger plan, the number of rules before it.
    """
    if index is None:
        return "no rule: trainable by default"
    if index == Mask.NOT_FLOATING:
        return "integer dtype: cannot train"
    if index == Mask.TRAIN_BN:
        return "train_bn"
    if index == Mask.KEPT:
        return "outside the plan's scope: kept as it was"
    rules = plan.rules if offset else plan.all_rules
    local = index - offset
    if 0 <= local < len(rules):
        return f"rule {index}: {rules[local]}"
    return f"rule {index}"
