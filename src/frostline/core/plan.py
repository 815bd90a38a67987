"""Plans: ordered freeze/unfreeze rules that decide which leaves train.

A plan is data. Rules apply in order and the last matching rule wins; a leaf no rule matches
stays trainable. A plan also carries the BatchNorm policy. It round-trips through dict, JSON
and YAML (safe loading only).

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

from .._errors import PlanError, SelectorError, TiedWeightError
from ._gc import paused_gc
from .groups import Groups
from .leaves import PARAM, TreeView
from .mask import Mask
from .norms import STAT_NAMES, held_by_norm, is_batchnorm, keeps_stats_outside
from .selectors import MatchContext, Selector, as_selector, explain_empty

FREEZE = "freeze"
UNFREEZE = "unfreeze"
ACTIONS = (FREEZE, UNFREEZE)
SCHEMA_VERSION = 1
_PLAN_KEYS = ("version", "rules", "freeze_bn_stats", "train_bn", "unlocked_groups", "groups")
# How the groups a plan's group selectors refer to are built; kept with the plan so that a saved
# plan selects the same groups when it is loaded again (names -> accepted value types).
GROUP_OPTIONS = {"coarse": bool, "auto": bool, "head_group": bool, "tower": str,
                 "spec": tuple, "names": tuple}


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

    Attributes:
        rules: the rules in order.
        freeze_bn_stats: fix the running statistics of every BatchNorm whose leaves are all frozen
            (it stays in eval mode even after ``model.train()``), as OpenCLIP's lock does.
        train_bn: keep the affine parameters of normalisation layers trainable inside frozen parts
            (fastai's ``train_bn``); their statistics follow ``freeze_bn_stats`` regardless.
        unlocked_groups: set by :meth:`lock`; checked against the model's number of groups.
        groups: how to build the groups that ``group:`` selectors refer to (``coarse``, ``tower``,
            ``head_group``, ``auto``, ``spec``, ``names``), as sorted ``(name, value)`` pairs;
            options passed when the plan is applied add to (and override) these.
    """

    rules: tuple[Rule, ...] = ()
    freeze_bn_stats: bool = False
    train_bn: bool = False
    unlocked_groups: int | None = field(default=None)
    groups: tuple[tuple[str, Any], ...] = ()

    # --- building ------------------------------------------------------------------------------

    def freeze(self, selector: Selector | str, *, allow_empty: bool = False) -> Plan:
        """Return a plan with a rule that freezes ``selector`` appended."""
        return replace(self, rules=(*self.rules, Rule(FREEZE, as_selector(selector), allow_empty)))

    def unfreeze(self, selector: Selector | str, *, allow_empty: bool = False) -> Plan:
        """Return a plan with a rule that makes ``selector`` trainable appended."""
        return replace(self, rules=(*self.rules, Rule(UNFREEZE, as_selector(selector), allow_empty)))

    def with_bn(self, *, freeze_bn_stats: bool | None = None, train_bn: bool | None = None) -> Plan:
        """Return a plan with another BatchNorm policy."""
        return replace(
            self,
            freeze_bn_stats=self.freeze_bn_stats if freeze_bn_stats is None else freeze_bn_stats,
            train_bn=self.train_bn if train_bn is None else train_bn,
        )

    def with_groups(self, **options: Any) -> Plan:
        """Return a plan that builds its groups with ``options`` (e.g. ``tower="image"``).

        Example:
            >>> Plan.lock(2).with_groups(coarse=True).group_options
            {'coarse': True}
        """
        merged = {**self.group_options, **_checked_group_options(options)}
        return replace(self, groups=tuple(sorted(merged.items())))

    @property
    def group_options(self) -> dict[str, Any]:
        """The plan's grouping options as a dict."""
        return dict(self.groups)

    def _grouping(self, call_options: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.group_options, **call_options}

    @classmethod
    def lock(cls, unlocked_groups: int = 0, freeze_bn_stats: bool = False,
             within: tuple[str, ...] = ()) -> Plan:
        """OpenCLIP's lock as a plan: freeze everything but the last ``unlocked_groups`` groups.

        ``within`` (path globs, e.g. ``("visual",)``) limits the freezing to one part of the
        model, as OpenCLIP's ``lock_image_tower`` leaves the text tower alone.

        Example:
            >>> print(Plan.lock(2, freeze_bn_stats=True))
            Plan(freeze **, unfreeze group:-2:; freeze_bn_stats, unlocked_groups=2)
            >>> print(Plan.lock(1, within=("visual",)))
            Plan(freeze visual, unfreeze group:-1:; unlocked_groups=1)
        """
        if isinstance(unlocked_groups, bool) or not isinstance(unlocked_groups, int) or (
            unlocked_groups < 0
        ):
            raise PlanError(
                f"unlocked_groups must be a non-negative int, got {unlocked_groups!r}; "
                "0 freezes every group, k keeps the last k groups trainable."
            )
        from .selectors import everything, group, path

        rules = [Rule(FREEZE, path(*within) if within else everything())]
        if unlocked_groups:
            rules.append(Rule(UNFREEZE, group(slice(-unlocked_groups, None))))
        return cls(tuple(rules), freeze_bn_stats=freeze_bn_stats, unlocked_groups=unlocked_groups)

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, view: TreeView, groups: Groups | Callable[[], Groups] | None = None) -> Mask:
        """Evaluate the plan on a tree view: one trainable flag per leaf, True = trainable.

        Raises:
            SelectorError: a rule matches nothing (unless it allows that), with the closest names.
            GroupError: ``unlocked_groups`` exceeds the number of groups.
            TiedWeightError: two paths of one shared tensor end up in different states.
        """
        ctx = MatchContext(view, groups)
        if self.unlocked_groups is not None and self.unlocked_groups > len(ctx.groups):
            from .._errors import GroupError

            raise GroupError(
                f"cannot unlock {self.unlocked_groups} groups: the model has {len(ctx.groups)} "
                f"groups ({', '.join(ctx.groups.names)}); use 0..{len(ctx.groups)}."
            )
        trainable = [True] * len(view)
        decided_by: list[int | None] = [None] * len(view)
        for rule_index, rule in enumerate(self.rules):
            hits = rule.selector.select(ctx)
            if not rule.allow_empty and not any(hits) and len(view):
                raise SelectorError(
                    f"rule {rule_index} ({rule}) matches nothing in this model: "
                    f"{explain_empty(rule.selector, ctx)}. Fix the selector, or pass "
                    "allow_empty=True for a rule that may legitimately match nothing."
                )
            value = rule.action == UNFREEZE
            for i, hit in enumerate(hits):
                if hit:
                    trainable[i] = value
                    decided_by[i] = rule_index
        # Statistics follow the rules alone: train_bn trains affine parameters, never statistics.
        frozen_stats = _frozen_stat_modules(view, trainable) if self.freeze_bn_stats else ()
        if self.train_bn:
            for i, leaf in enumerate(view):
                if leaf.kind == PARAM and not trainable[i] and held_by_norm(leaf):
                    trainable[i] = True
                    decided_by[i] = Mask.TRAIN_BN
        for i, leaf in enumerate(view):
            if leaf.kind == PARAM and trainable[i] and not leaf.is_floating:
                trainable[i] = False
                decided_by[i] = Mask.NOT_FLOATING
        _check_ties(view, trainable, decided_by, self)
        return Mask(
            names=view.names,
            trainable=tuple(trainable),
            decided_by=tuple(decided_by),
            frozen_stats=frozen_stats,
        )

    # --- model-level operations (dispatch to the model's backend) -------------------------------

    def apply(self, model: Any, **group_options: Any) -> Any:
        """Apply the plan to ``model`` (PyTorch: sets ``requires_grad`` and BN state in place).

        Returns the model for PyTorch; JAX models are immutable: use :meth:`mask` or
        ``fl.partition`` there.
        """
        from .backend import backend_for

        backend = backend_for(model)
        mask = self.mask_on(model, **group_options)
        return backend.apply(model, mask, self)

    def mask_on(self, model: Any, **group_options: Any) -> Mask:
        """Evaluate the plan on a model: the framework-neutral :class:`Mask`."""
        from .backend import backend_for

        backend = backend_for(model)
        options = self._grouping(group_options)
        with paused_gc():
            view = backend.view(model)
            return self.evaluate(view, lambda: backend.groups(model, view, **options))

    def mask(self, model: Any, **group_options: Any) -> Any:
        """The framework's own mask: a filter spec pytree (JAX) or {name: bool} (PyTorch)."""
        from .backend import backend_for

        return backend_for(model).native_mask(model, self.mask_on(model, **group_options))

    def explain(self, model: Any, *, buffers: bool = False, **group_options: Any) -> Any:
        """Say which rule decided each parameter (and buffer, with ``buffers=True``)."""
        from .._report import Explanation
        from .backend import backend_for

        backend = backend_for(model)
        view = backend.view(model)
        groups = backend.groups(model, view, **self._grouping(group_options))
        return Explanation.build(self, view, groups, self.evaluate(view, groups), buffers=buffers)

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
        if self.groups:
            out["groups"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.groups}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Read a plan dict, checking keys, types and the schema version."""
        if not isinstance(data, Mapping):
            raise PlanError(f"a plan must be a mapping with 'rules', got {type(data).__name__}.")
        unknown = sorted(set(map(str, data)) - set(_PLAN_KEYS))
        if unknown:
            raise PlanError(f"unknown plan keys {unknown}; allowed keys are {list(_PLAN_KEYS)}.")
        version = data.get("version", SCHEMA_VERSION)
        if type(version) is not int or version != SCHEMA_VERSION:  # true and 1.0 are not 1
            raise PlanError(
                f"plan schema version {version!r} is not supported; this frostline reads "
                f"version {SCHEMA_VERSION}."
            )
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise PlanError(f"'rules' must be a list, got {type(raw_rules).__name__}.")
        rules = tuple(_rule_from_dict(i, entry) for i, entry in enumerate(raw_rules))
        unlocked = data.get("unlocked_groups")
        if unlocked is not None and (isinstance(unlocked, bool) or not isinstance(unlocked, int)
                                     or unlocked < 0):
            raise PlanError(f"'unlocked_groups' must be a non-negative int, got {unlocked!r}.")
        raw_groups = data.get("groups", {})
        if not isinstance(raw_groups, Mapping):
            raise PlanError(
                f"'groups' must be a mapping of grouping options, got {type(raw_groups).__name__}."
            )
        return cls(
            rules,
            freeze_bn_stats=_flag(data, "freeze_bn_stats"),
            train_bn=_flag(data, "train_bn"),
            unlocked_groups=unlocked,
        ).with_groups(**{str(k): v for k, v in raw_groups.items()})

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}.") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Plan:
        """Read a YAML plan with ``yaml.safe_load`` (no code runs while loading)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlanError(f"plan is not valid YAML: {str(exc).splitlines()[0]}.") from None
        return cls.from_dict(data)

    def save(self, path: str) -> None:
        """Write the plan as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
        text = self.to_yaml() if str(path).endswith((".yaml", ".yml")) else self.to_json(indent=2)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)

    @classmethod
    def load(cls, path: str) -> Plan:
        """Read a plan file written by :meth:`save` (YAML or JSON)."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise PlanError(f"cannot read plan file {path!r}: {exc.strerror}.") from None
        return cls.from_json(text) if str(path).endswith(".json") else cls.from_yaml(text)

    def __str__(self) -> str:
        body = ", ".join(str(rule) for rule in self.rules) or "everything trainable"
        flags = [name for name in ("freeze_bn_stats", "train_bn") if getattr(self, name)]
        if self.unlocked_groups is not None:
            flags.append(f"unlocked_groups={self.unlocked_groups}")
        if self.groups:
            flags.append("groups(" + ", ".join(f"{k}={v!r}" for k, v in self.groups) + ")")
        return f"Plan({body}" + ("; " + ", ".join(flags) if flags else "") + ")"


def _checked_group_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Grouping options in their stored form (sequences as tuples of strings), type-checked."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in GROUP_OPTIONS:
            raise PlanError(
                f"unknown grouping option {key!r} for a plan; known: {sorted(GROUP_OPTIONS)} "
                "(an example_input cannot be stored: pass it when applying the plan)."
            )
        if GROUP_OPTIONS[key] is tuple:
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
                    isinstance(item, str) for item in value):
                raise PlanError(f"grouping option {key!r} must be a list of strings, got {value!r}.")
            value = tuple(value)
        elif type(value) is not GROUP_OPTIONS[key]:
            raise PlanError(
                f"grouping option {key!r} must be a {GROUP_OPTIONS[key].__name__}, got {value!r}."
            )
        out[key] = value
    return out


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
            f"rule {index} must be a mapping like {{freeze: 'name:bias'}}, got {entry!r}."
        )
    actions = [key for key in entry if key in ACTIONS]
    extra = sorted(set(map(str, entry)) - set(ACTIONS) - {"allow_empty"})
    if len(actions) != 1 or extra:
        raise PlanError(
            f"rule {index} must have exactly one of 'freeze'/'unfreeze' (and optionally "
            f"'allow_empty'), got keys {sorted(map(str, entry))}."
        )
    action = actions[0]
    text = entry[action]
    if not isinstance(text, str):
        raise PlanError(f"rule {index}: the selector must be a string, got {text!r}.")
    allow_empty = entry.get("allow_empty", False)
    if not isinstance(allow_empty, bool):
        raise PlanError(f"rule {index}: 'allow_empty' must be true or false, got {allow_empty!r}.")
    try:
        return Rule(action, as_selector(text), allow_empty)
    except SelectorError as exc:
        raise PlanError(f"rule {index}: {exc}") from None


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise PlanError(f"'{key}' must be true or false, got {value!r}.")
    return value


def _check_ties(view: TreeView, trainable: list[bool], decided_by: list[int | None],
                plan: Plan) -> None:
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
                f"({describe_decision(plan, decided_by[j])}) and '{leaf.name}' "
                f"{_state(trainable[i])} ({describe_decision(plan, decided_by[i])}). "
                "Select both paths in the same rule, or untie the weights."
            )


def _state(trainable: bool) -> str:
    return "trainable" if trainable else "frozen"


def describe_decision(plan: Plan, index: int | None) -> str:
    """What decided a leaf, in words, from a :class:`Mask` ``decided_by`` entry."""
    if index is None:
        return "no rule: trainable by default"
    if index == Mask.NOT_FLOATING:
        return "integer dtype: cannot train"
    if index == Mask.TRAIN_BN:
        return "train_bn"
    return f"rule {index}: {plan.rules[index]}"


def _frozen_stat_modules(view: TreeView, trainable: list[bool]) -> tuple[str, ...]:
    """BatchNorm modules whose running statistics are all frozen by the plan.

    Where no leaf holds the statistics (Equinox keeps them in an ``eqx.nn.State``), the
    BatchNorm's own parameters stand for them, as decided by the rules.
    """
    state: dict[str, bool] = {}
    for i, leaf in enumerate(view):
        if not leaf.owners or not is_batchnorm(leaf.owners[-1]):
            continue
        if leaf.path[-1] in STAT_NAMES or keeps_stats_outside(leaf.owners[-1]):
            module = leaf.module_path
            state[module] = state.get(module, True) and not trainable[i]
    return tuple(module for module, frozen in state.items() if frozen)
