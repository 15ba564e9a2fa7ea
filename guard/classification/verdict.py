"""The result of classification: a category, a score and the reasons behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from guard.pickling import fast_pickle

CATEGORIES = ("scam", "suspicious", "report", "inquiry", "automated", "other")


@fast_pickle
@dataclass(frozen=True, slots=True)
class Reason:
    rule: str
    description: str
    score: float
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "description": self.description, "score": round(self.score, 3)}


@dataclass(frozen=True)
class Verdict:
    """``score`` is the scam score (sum of the scam-tagged reasons, model included).

    ``scores`` holds the sum per category tag (scam, automated, report,
    inquiry, paid). ``reasons`` are ordered by weight, heaviest first. For a
    report, ``inner`` is the verdict on the forwarded message.
    """

    category: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    reasons: tuple[Reason, ...] = ()
    inner: "Verdict | None" = None
    paid: bool = False
    model_p: float | None = None
    defects: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "score": round(self.score, 3),
            "scores": {k: round(v, 3) for k, v in sorted(self.scores.items())},
            "reasons": [r.to_dict() for r in self.reasons],
            "inner": self.inner.to_dict() if self.inner is not None else None,
            "paid": self.paid,
            "model_p": None if self.model_p is None else round(self.model_p, 4),
            "defects": list(self.defects),
        }
