"""Figures of the whole pipeline against labels: the confusion matrix and the figures users feel. Pure.

Truth labels are the own corpus's (scam, report, inquiry, automated, other, with ``paid`` for
reports); predictions are verdicts (the six categories, with ``paid``). The figures are the ones
the classification issue set goals for:

* scams given the scam verdict (quarantined), and scam or suspicious;
* genuine mail and participants' reports quarantined as scam;
* reports recognised as reports; paid reports flagged as paid; inquiries wrongly flagged as paid;
* genuine inquiries routed as inquiries; automated mail recognised.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from guard.classification.verdict import CATEGORIES

TRUTH = ("scam", "report", "inquiry", "automated", "other")


@dataclass(frozen=True)
class Labelled:
    category: str
    paid: bool


def _rate(n: int, d: int) -> tuple[float | None, int, int]:
    return (n / d if d else None, n, d)


def figures(truth: list[Labelled], predicted: list[Labelled]) -> dict:
    """Every figure as (rate, numerator, denominator); the confusion matrix as nested counts."""
    pairs = list(zip(truth, predicted))
    conf = {t: Counter() for t in TRUTH}
    for t, p in pairs:
        conf.setdefault(t.category, Counter())[p.category] += 1

    scams = [x for x in pairs if x[0].category == "scam"]
    genuine = [x for x in pairs if x[0].category != "scam"]
    reports = [x for x in pairs if x[0].category == "report"]
    paid = [x for x in reports if x[0].paid]
    inquiries = [x for x in pairs if x[0].category == "inquiry"]
    automated = [x for x in pairs if x[0].category == "automated"]
    flagged_paid = [x for x in pairs if x[1].paid]
    out = {
        "scam_quarantined": _rate(sum(p.category == "scam" for _, p in scams), len(scams)),
        "scam_or_suspicious": _rate(sum(p.category in ("scam", "suspicious") for _, p in scams), len(scams)),
        "genuine_quarantined": _rate(sum(p.category == "scam" for _, p in genuine), len(genuine)),
        "report_recognised": _rate(sum(p.category == "report" for _, p in reports), len(reports)),
        "paid_flagged": _rate(sum(p.paid for _, p in paid), len(paid)),
        "paid_precision": _rate(sum(t.paid for t, _ in flagged_paid), len(flagged_paid)),
        "inquiry_flagged_paid": _rate(sum(p.paid for _, p in inquiries), len(inquiries)),
        "inquiry_routed": _rate(sum(p.category == "inquiry" for _, p in inquiries), len(inquiries)),
        "automated_recognised": _rate(sum(p.category == "automated" for _, p in automated), len(automated)),
        "confusion": {t: {c: conf[t][c] for c in CATEGORIES} for t in TRUTH},
        "n": len(pairs),
    }
    return out


GOALS = (
    ("scam_quarantined", "scams given the scam verdict (quarantined)", ">=", 0.97),
    ("scam_or_suspicious", "scams given scam or suspicious", ">=", None),
    ("genuine_quarantined", "genuine mail and reports quarantined as scam", "<=", 0.005),
    ("report_recognised", "participants' reports recognised as reports", ">=", 0.90),
    ("paid_flagged", "reports whose writer already paid, flagged as paid", ">=", 0.90),
    ("paid_precision", "flagged as paid that really paid (precision)", ">=", None),
    ("inquiry_flagged_paid", "inquiries wrongly flagged as paid", "<=", 0.01),
    ("inquiry_routed", "genuine inquiries routed as inquiries", ">=", 0.95),
    ("automated_recognised", "automated mail recognised", ">=", 0.98),
)


def report(figs: dict, title: str) -> str:
    """The figures as a text table with the goals, then the confusion matrix."""
    lines = [f"== {title} ({figs['n']} messages) ==", f"{'figure':<52} {'value':>16}  goal"]
    for key, label, op, goal in GOALS:
        rate, n, d = figs[key]
        value = "-" if rate is None else f"{100 * rate:5.1f} % ({n}/{d})"
        g = "" if goal is None else f"{op} {100 * goal:g} %"
        miss = ""
        if goal is not None and rate is not None and ((op == ">=" and rate < goal) or (op == "<=" and rate > goal)):
            miss = f"  MISSED by {100 * abs(rate - goal):.1f} points"
        lines.append(f"{label:<52} {value:>16}  {g}{miss}")
    lines.append("")
    lines.append("confusion (rows: truth, columns: verdict)")
    lines.append(f"{'':<10}" + "".join(f"{c:>11}" for c in CATEGORIES))
    for t in TRUTH:
        row = figs["confusion"].get(t, {})
        lines.append(f"{t:<10}" + "".join(f"{row.get(c, 0):>11}" for c in CATEGORIES))
    return "\n".join(lines)
