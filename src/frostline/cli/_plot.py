"""The sweep plot: accuracy and time per epoch against unlocked groups, recommendation marked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Panel:
    """One task's row of the figure."""

    title: str
    result: Any  # SweepResult
    recommended: Any  # the recommended Setting


def plot_sweeps(panels: Sequence[Panel], path: str) -> str:
    """Write a PNG with one row per panel: accuracy (left) and seconds per epoch (right).

    The x axis is the number of unlocked (trainable) groups. Frost lines (the last k groups)
    are a line; LP-FT and surgical settings are separate markers at their group counts. The
    recommended setting is circled, the measured best starred.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.6 * len(panels)), squeeze=False)
    for (acc_ax, time_ax), panel in zip(axes, panels):
        _accuracy_panel(acc_ax, panel)
        _time_panel(time_ax, panel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lines(result: Any) -> tuple[list[Any], list[Any]]:
    """(frost-line rows, other rows): frost lines are labelled by their group count."""
    frost = [row for row in result.rows if row.label == str(row.unlocked_groups)]
    others = [row for row in result.rows if row not in frost and row.unlocked_groups is not None]
    return frost, others


def _accuracy_panel(ax: Any, panel: Panel) -> None:
    result = panel.result
    frost, others = _lines(result)
    ax.plot([r.unlocked_groups for r in frost], [100 * r.val_accuracy for r in frost], "o-",
            color="tab:blue", label="last k groups train")
    for marker, row in zip("sD^v", others):
        ax.plot(row.unlocked_groups, 100 * row.val_accuracy, marker, linestyle="none",
                markersize=8, label=row.label)
    rec = result.row(panel.recommended)
    best = result.best
    ax.plot(rec.unlocked_groups, 100 * rec.val_accuracy, "o", markersize=16, fillstyle="none",
            color="tab:red", markeredgewidth=2, label=f"recommended ({rec.label})")
    ax.plot(best.unlocked_groups, 100 * best.val_accuracy, "*", markersize=14, color="gold",
            markeredgecolor="black", label=f"measured best ({best.label})")
    ax.axvline(rec.unlocked_groups, color="tab:red", linestyle=":", linewidth=1)
    ax.set_xlabel("unlocked groups")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(panel.title, fontsize=10)
    ax.set_xticks(range(1, len(result.group_names) + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _time_panel(ax: Any, panel: Panel) -> None:
    result = panel.result
    frost, _ = _lines(result)
    xs = [r.unlocked_groups for r in frost]
    ax.plot(xs, [1000 * r.epoch_seconds for r in frost], "o-", label="cached features")
    if result.baseline is not None:
        ax.plot(xs, [1000 * result.baseline.row(r.setting).epoch_seconds for r in frost], "s--",
                label="uncached (whole model)")
        ax.set_title(f"time per epoch; whole sweep {result.speedup:.2f}x faster cached",
                     fontsize=10)
    else:
        ax.set_title("time per epoch", fontsize=10)
    rec = result.row(panel.recommended)
    ax.axvline(rec.unlocked_groups, color="tab:red", linestyle=":", linewidth=1,
               label="recommended")
    ax.set_xlabel("unlocked groups")
    ax.set_ylabel("ms per epoch")
    ax.set_xticks(range(1, len(result.group_names) + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
