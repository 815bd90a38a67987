"""Readable reports: the per-group summary and the per-parameter explanation of a plan."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from .core.leaves import PARAM, unique_numel
from .core.plan import describe_decision
from .core.resolve import Resolved


def render(renderable: Any, width: int = 120) -> str:
    """Render a rich object to plain text."""
    buffer = io.StringIO()
    # Selectors such as "group:-1:" are data: no emoji codes, no markup.
    Console(file=buffer, width=width, color_system=None, soft_wrap=False, emoji=False,
            markup=False).print(renderable)
    return buffer.getvalue().rstrip("\n")


def count_line(trainable: int, total: int) -> str:
    """``trainable 1,234 / 5,678 (21.7%)``."""
    share = 100.0 * trainable / total if total else 0.0
    return f"trainable {trainable:,} / {total:,} ({share:.1f}%)"


@dataclass(frozen=True)
class GroupRow:
    index: int
    name: str
    modules: tuple[str, ...]
    params: int
    trainable: int
    frozen_bn: int


@dataclass(frozen=True)
class Summary:
    """Per-group parameter counts and what trains; ``str()`` gives the table and a total line.

    Attributes:
        rows: one row per group, input first.
        unmatched: parameter names in no group.
        trainable: trainable elements (each shared tensor once).
        total: all parameter elements (each shared tensor once).
        source: where the groups came from, and notes.
    """

    rows: tuple[GroupRow, ...]
    trainable: int
    total: int
    source: str
    notes: tuple[str, ...] = ()
    unmatched: tuple[str, ...] = ()

    @classmethod
    def of(cls, resolved: Resolved) -> Summary:
        """The summary of a resolved model: its groups and what its mask trains."""
        view, groups, frozen_stats = resolved.view, resolved.groups, resolved.frozen_stats
        trainable = resolved.mask.as_dict()
        params = [leaf for leaf in view if leaf.kind == PARAM]
        rows = []
        for group in groups:
            members = [view[n] for n in group.parameter_names]
            stat_modules = {view[n].module_path for n in group.leaf_names} & frozen_stats
            rows.append(GroupRow(
                index=group.index,
                name=group.name,
                modules=group.modules,
                params=unique_numel(members),
                trainable=unique_numel([leaf for leaf in members if trainable.get(leaf.name)]),
                frozen_bn=len(stat_modules),
            ))
        return cls(
            rows=tuple(rows),
            trainable=unique_numel([leaf for leaf in params if trainable.get(leaf.name)]),
            total=unique_numel(params),
            source=groups.source,
            notes=groups.notes,
            unmatched=tuple(n for n in groups.unmatched if n in view and view[n].kind == PARAM),
        )

    @property
    def total_line(self) -> str:
        return count_line(self.trainable, self.total)

    def table(self) -> Table:
        table = Table(title=f"layer groups ({self.source})", title_justify="left")
        columns: list[tuple[str, Literal["left", "right"]]] = [
            ("#", "right"), ("group", "left"), ("modules", "left"), ("params", "right"),
            ("trainable", "right"), ("frozen BN", "right")]
        for column, justify in columns:
            table.add_column(column, justify=justify)
        for row in self.rows:
            table.add_row(str(row.index), row.name, _short(row.modules), f"{row.params:,}",
                          f"{row.trainable:,}", str(row.frozen_bn) if row.frozen_bn else "")
        return table

    def __str__(self) -> str:
        lines = [render(self.table())]
        lines += [f"note: {note}" for note in self.notes]
        if self.unmatched:
            lines.append(f"matched no grouping rule: {', '.join(self.unmatched[:8])}"
                         + (" ..." if len(self.unmatched) > 8 else ""))
        lines.append(self.total_line)
        return "\n".join(lines)

    def __rich__(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "notes": list(self.notes),
            "groups": [row.__dict__ | {"modules": list(row.modules)} for row in self.rows],
            "unmatched": list(self.unmatched),
            "trainable": self.trainable,
            "total": self.total,
        }


def _short(modules: tuple[str, ...], limit: int = 4) -> str:
    shown = ", ".join(m or "<root>" for m in modules[:limit])
    return shown + (f" (+{len(modules) - limit})" if len(modules) > limit else "")


@dataclass(frozen=True)
class ExplainRow:
    name: str
    kind: str
    group: str
    trainable: bool
    decided_by: str


@dataclass(frozen=True)
class Explanation:
    """Which rule decided each parameter; ``str()`` gives a table, ``to_dict()`` the data."""

    plan_text: str
    rows: tuple[ExplainRow, ...]
    frozen_stats: tuple[str, ...]

    @classmethod
    def of(cls, resolved: Resolved, buffers: bool = False) -> Explanation:
        """Explain the plan of a resolved model (``buffers``: list buffers too)."""
        plan, view, groups, mask = resolved.plan, resolved.view, resolved.groups, resolved.mask
        rows = []
        for leaf, trainable, decided in zip(view, mask.trainable, mask.decided_by):
            if leaf.kind != PARAM and not buffers:
                continue
            index = groups.index_of(leaf.name)
            rows.append(ExplainRow(
                name=leaf.name,
                kind=leaf.kind,
                group="-" if index is None else groups.groups[index].name,
                trainable=trainable,
                decided_by=describe_decision(plan, decided) if plan is not None
                else "current state",
            ))
        return cls(str(plan) if plan is not None else "current state", tuple(rows),
                   mask.frozen_stats)

    def __str__(self) -> str:
        table = Table(title=self.plan_text, title_justify="left")
        for column in ("parameter", "group", "state", "decided by"):
            table.add_column(column)
        for row in self.rows:
            table.add_row(row.name, row.group, "trainable" if row.trainable else "frozen",
                          row.decided_by)
        text = render(table, width=160)
        if self.frozen_stats:
            text += f"\nBatchNorm statistics fixed in {len(self.frozen_stats)} modules"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan_text, "parameters": [r.__dict__ for r in self.rows],
                "frozen_bn_stats": list(self.frozen_stats)}
