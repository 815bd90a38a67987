"""What the evaluation suite measured about the rules of thumb, cell by cell.

The suite (``benchmarks/eval_choose.py``) trains every candidate setting on transfer tasks and
``benchmarks/calibrate_rules.py`` turns the measurements into ``frostline/data/rule_evidence.json``:
for each cell of the rule table (size class of the training set / kind of shift) the rule form
that did best in the worst case, the tasks behind it, and the shares of the best accuracy that
this form and the literature's rule reached. :func:`~frostline.core.recommend.recommend_for_groups`
reads it to pick the rule and to say how sure it is.

Example:
    >>> found = rule_evidence()
    >>> all(e.form in FORMS or e.form == LITERATURE for e in found.values())
    True
    >>> Evidence("tiny/input", "last 2", ("a", "b", "c"), 0.985, 0.99, 0.6, 0.8).confidence
    'high'
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

# Rule forms the calibration chooses between, cheapest first ("first k" trains the head too
# when it is new). Each is a setting every full sweep of the suite measures.
FORMS = ("head", "last 2", "first 1", "first 2", "top half", "all", "lp-ft all")

LITERATURE = "literature"  # the literature's rule, confirmed by the suite

FORM_WORDS = {
    LITERATURE: "the literature's rule",
    "head": "the head alone (a linear probe)",
    "last 2": "the last 2 groups",
    "first 1": "the first group (surgical)",
    "first 2": "the first 2 groups (surgical)",
    "top half": "the top half of the groups",
    "all": "every group",
    "lp-ft all": "every group after a linear probe (LP-FT)",
}


@dataclass(frozen=True)
class Evidence:
    """One cell of the rule table as the suite measured it.

    Attributes:
        cell: ``"<size class>/<shift>"``, e.g. ``"tiny/output"``.
        form: the calibrated rule (one of :data:`FORMS`, or ``"literature"`` where the
            literature's rule came within a percentage point of the best form).
        tasks: the suite's tasks in this cell.
        min_share, mean_share: the form's worst and mean share of each task's best accuracy.
        literature_min_share, literature_mean_share: the same for the literature's rule.
    """

    cell: str
    form: str
    tasks: tuple[str, ...]
    min_share: float
    mean_share: float
    literature_min_share: float
    literature_mean_share: float

    @property
    def confidence(self) -> str:
        """"high" (3 or more tasks, none below 98% of its best), "medium" (none below 95%) or
        "low"."""
        if len(self.tasks) >= 3 and self.min_share >= 0.98:
            return "high"
        return "medium" if self.min_share >= 0.95 and len(self.tasks) >= 2 else "low"

    def describe(self) -> str:
        """One sentence for a recommendation's reasons."""
        count = len(self.tasks)
        if self.form == LITERATURE:
            return (f"confirmed on the evaluation suite ({count} task{'s' * (count != 1)} in "
                    f"this cell: {', '.join(self.tasks)}): the literature's rule reached "
                    f"{100 * self.min_share:.1f}% of the best at worst (mean "
                    f"{100 * self.mean_share:.1f}%), within a point of the best rule form; "
                    f"confidence {self.confidence}")
        return (f"calibrated on the evaluation suite ({count} task{'s' * (count != 1)} in this "
                f"cell: {', '.join(self.tasks)}): {FORM_WORDS[self.form]} reached "
                f"{100 * self.min_share:.1f}% of the best at worst (mean "
                f"{100 * self.mean_share:.1f}%), the literature's rule "
                f"{100 * self.literature_min_share:.1f}% (mean "
                f"{100 * self.literature_mean_share:.1f}%); confidence {self.confidence}")


@functools.cache
def rule_evidence() -> dict[str, Evidence]:
    """The shipped evidence, by cell (empty when the file is absent)."""
    path = resources.files("frostline") / "data" / "rule_evidence.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {cell: Evidence(cell, e["form"], tuple(e["tasks"]), e["min_share"], e["mean_share"],
                           e["literature_min_share"], e["literature_mean_share"])
            for cell, e in raw.items() if e["form"] in (*FORMS, LITERATURE)}
