"""Recalibrate the rules of thumb from the evaluation suite's measurements.

Reads every task that ``eval_choose.py`` measured (``benchmarks/results/*.json``: the full sweep's
validation accuracy for every setting), groups the tasks into the cells of the rule table (size
class of the training set x kind of shift), and scores every rule form on every task as a share
of that task's best. A cell's rule becomes the form with the highest worst-case share (ties: the
higher mean, then the cheaper form), unless the literature's rule comes within a percentage point
of it: then the literature's rule stays, confirmed. The evidence, with the share the literature rule reached,
is written to ``src/frostline/data/rule_evidence.json``, which ``fl.recommend`` reads to pick
the rule and to say how sure it is.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/calibrate_rules.py [--check]``
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from frostline.core.evidence import FORMS
from frostline.core.recommend import Thresholds, from_form, recommend_for_groups
from frostline.torch._sweep import Setting

HERE = Path(__file__).parent
EVIDENCE = HERE.parent / "src" / "frostline" / "data" / "rule_evidence.json"


def form_label(form: str, n_groups: int, new_head: bool) -> str:
    """The label of the sweep's setting that trains what ``form`` says."""
    return Setting.from_recommendation(from_form(form, n_groups, new_head)).label


def load_tasks(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def cell_of(task: dict) -> str:
    return f"{Thresholds().size_class(task['n_train'])}/{task['shift']}"


def shares(task: dict) -> dict[str, float]:
    """Every rule form's share of the task's best validation accuracy."""
    rows = {k: v for k, v in task["full_sweep"].items() if math.isfinite(v)}
    best = max(rows.values())
    out = {}
    for form in FORMS:
        label = form_label(form, task["n_groups"], task["new_head"])
        if label in rows:
            out[form] = rows[label] / best
    return out


def literature_share(task: dict) -> float:
    """The share of the best that the uncalibrated rule's pick reached."""
    rows = task["full_sweep"]
    rec = recommend_for_groups(task["n_groups"], task["n_train"], task["shift"],
                               new_head=task["new_head"], calibrated=False)
    label = Setting.from_recommendation(rec).label
    return rows[label] / max(v for v in rows.values() if math.isfinite(v))


def calibrate(tasks: list[dict]) -> dict[str, dict]:
    cells: dict[str, list[dict]] = {}
    for task in tasks:
        cells.setdefault(cell_of(task), []).append(task)
    evidence = {}
    for cell, members in sorted(cells.items()):
        scored = [shares(t) for t in members]
        common = [f for f in FORMS if all(f in s for s in scored)]
        # Shares are compared to the percentage point: a closer call is noise, and the cheaper
        # form wins it.
        best = max(common, key=lambda f: (round(min(s[f] for s in scored), 2),
                                          round(sum(s[f] for s in scored) / len(scored), 2),
                                          -FORMS.index(f)))
        chosen = [s[best] for s in scored]
        literature = [literature_share(t) for t in members]
        if round(min(literature), 2) >= round(min(chosen), 2):
            best, chosen = "literature", literature  # confirmed: within a point of the best
        evidence[cell] = {
            "form": best,
            "tasks": [t["task"] for t in members],
            "min_share": min(chosen), "mean_share": sum(chosen) / len(chosen),
            "literature_min_share": min(literature),
            "literature_mean_share": sum(literature) / len(literature),
            "forms": {f: [round(s[f], 4) for s in scored] for f in common},
        }
    return evidence


def held_out(tasks: list[dict]) -> None:
    """Leave one task out: calibrate on the others, score the rule on the one left out."""
    print("| task left out | cell | rule calibrated without it | its share | literature's share |")
    print("| --- | --- | --- | ---: | ---: |")
    calibrated_shares, literature_shares = [], []
    for i, task in enumerate(tasks):
        evidence = calibrate(tasks[:i] + tasks[i + 1:]).get(cell_of(task))
        literature = literature_share(task)
        form = evidence["form"] if evidence else "literature"
        share = literature if form == "literature" else shares(task)[form]
        calibrated_shares.append(share)
        literature_shares.append(literature)
        print(f"| {task['task']} | {cell_of(task)} | {form} | {100 * share:.1f}% | "
              f"{100 * literature:.1f}% |")
    for name, values in (("calibrated", calibrated_shares), ("literature", literature_shares)):
        print(f"{name}: worst {100 * min(values):.1f}%, mean "
              f"{100 * sum(values) / len(values):.1f}% of the best on the task left out")


def suite_table(tasks: list[dict]) -> None:
    """Every task: the full sweep's best, the rules' and fl.choose's picks, and the cost."""
    print("| task | n | shift | budget | full sweep best | literature's rule | calibrated rule "
          "| fl.choose | choose / full: wall | epochs |")
    print("| --- | ---: | --- | --- | --- | --- | --- | --- | ---: | ---: |")
    for t in tasks:
        rows = {k: v for k, v in t["full_sweep"].items() if math.isfinite(v)}
        label, best = max(rows.items(), key=lambda item: item[1])
        budget = f"{t['epochs']} ep" + (f", {t['min_steps']} steps" if t["min_steps"] else "")
        picks = []
        for calibrated in (False, True):
            rec = recommend_for_groups(t["n_groups"], t["n_train"], t["shift"],
                                       new_head=t["new_head"], calibrated=calibrated)
            pick = Setting.from_recommendation(rec).label
            picks.append(f"{pick} {100 * rows[pick] / best:.1f}%" if pick in rows else
                         f"{pick} (not measured)")
        print(f"| {t['task']} | {t['n_train']} | {t['shift']} | {budget} | {label} "
              f"{100 * best:.1f}% | {picks[0]} | {picks[1]} | {t['choose_pick']} "
              f"{100 * t['choose_accuracy'] / best:.1f}% | {t['choose_seconds']:.1f} s / "
              f"{t['full_seconds']:.1f} s = {t['choose_seconds'] / t['full_seconds']:.2f} | "
              f"{t['choose_epochs']:.3g} / {t['full_epochs']:g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--check", action="store_true",
                        help="only compare with the evidence file frostline ships")
    parser.add_argument("--suite", action="store_true",
                        help="only print every task's picks and costs")
    parser.add_argument("--held-out", action="store_true",
                        help="only score the calibration on each task left out of it")
    args = parser.parse_args()
    if args.suite:
        suite_table(load_tasks(args.results))
        return
    if args.held_out:
        held_out(load_tasks(args.results))
        return
    evidence = calibrate(load_tasks(args.results))
    print("| cell | tasks | rule form | worst / mean share | literature rule: worst / mean |")
    print("| --- | --- | --- | ---: | ---: |")
    for cell, e in evidence.items():
        print(f"| {cell} | {', '.join(e['tasks'])} | {e['form']} | "
              f"{100 * e['min_share']:.1f}% / {100 * e['mean_share']:.1f}% | "
              f"{100 * e['literature_min_share']:.1f}% / {100 * e['literature_mean_share']:.1f}% |")
    text = json.dumps(evidence, indent=1, sort_keys=True) + "\n"
    if args.check:
        same = EVIDENCE.exists() and EVIDENCE.read_text() == text
        print("the shipped evidence is " + ("up to date" if same else "OUT OF DATE"))
        raise SystemExit(0 if same else 1)
    EVIDENCE.write_text(text)
    print(f"wrote {EVIDENCE}")


if __name__ == "__main__":
    main()
