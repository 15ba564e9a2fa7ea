"""Classification: a parsed message and a rule set in, a :class:`Verdict` out. Pure.

Every rule is evaluated (hits and misses both known), hit scores are summed
per category tag, and the category is the first row of this table that holds
(T_* are the configured thresholds):

====  ===========  ==============================================================
 1    report       report score >= T_report and automated score < T_automated,
                  and (a forwarded message is embedded or scam score < T_scam)
 2    scam         scam score >= T_scam
 3    automated    automated score >= T_automated
 4    suspicious   scam score >= T_suspicious
 5    inquiry      inquiry score >= T_inquiry
 6    other        otherwise
====  ===========  ==============================================================

Reports come first because a participant's forward quotes the scam it asks
about; that is why forwarded text is kept out of the outer message's own text
and classified separately as the report's ``inner`` verdict. The model, when
loaded, is one more scored signal: its probability feeds ``model`` rules
(buckets), never an action by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from guard.classification.matchers import MessageView, RuleContext
from guard.mail.message import ParsedMessage
from guard.classification.ruleset import CATEGORY_TAGS, Ruleset
from guard.settings import ThresholdSettings as Thresholds
from guard.classification.verdict import Reason, Verdict


class ScamModel(Protocol):
    def scam_probability(self, msg: ParsedMessage) -> float: ...


@dataclass(frozen=True)
class Classifier:
    ruleset: Ruleset
    context: RuleContext
    thresholds: Thresholds = Thresholds()
    model: ScamModel | None = None

    def classify(self, msg: ParsedMessage, *, _inner: bool = False) -> Verdict:
        inner = None
        if msg.forwarded and not _inner:
            inner_verdicts = [self.classify(m, _inner=True) for m in msg.forwarded]
            inner = max(inner_verdicts, key=lambda v: v.score)
        model_p = None
        if self.model is not None:
            model_p = float(self.model.scam_probability(msg))
        view = MessageView(msg, inner.category if inner else None, model_p)
        hits = evaluate(self.ruleset, view, self.context)
        return self._verdict(msg, hits, inner, model_p)

    def _verdict(self, msg: ParsedMessage, hits: list, inner: Verdict | None, model_p: float | None) -> Verdict:
        scores = {t: 0.0 for t in CATEGORY_TAGS}
        reasons = []
        for rule in hits:
            spec = rule.spec
            if spec.internal:
                continue
            for tag in spec.tags:
                if tag in scores:
                    scores[tag] += spec.score
            reasons.append(Reason(spec.id, spec.description, spec.score, tuple(spec.tags)))
        reasons.sort(key=lambda r: (-abs(r.score), r.rule))
        category = self._category(scores, bool(msg.forwarded))
        paid = category == "report" and scores["paid"] >= self.thresholds.paid
        return Verdict(
            category=category,
            score=scores["scam"],
            scores=scores,
            reasons=tuple(reasons),
            inner=inner,
            paid=paid,
            model_p=model_p,
            language=msg.language,
            defects=msg.defects,
        )

    def _category(self, s: dict[str, float], has_forward: bool) -> str:
        t = self.thresholds
        # a report that carries no forward must not itself read as a scam: phishing
        # mail says "fraud" and "you received" too, and a report gets a reply
        if s["report"] >= t.report and s["automated"] < t.automated and (has_forward or s["scam"] < t.scam):
            return "report"
        if s["scam"] >= t.scam:
            return "scam"
        if s["automated"] >= t.automated:
            return "automated"
        if s["scam"] >= t.suspicious:
            return "suspicious"
        if s["inquiry"] >= t.inquiry:
            return "inquiry"
        return "other"


def evaluate(ruleset: Ruleset, view: MessageView, ctx: RuleContext) -> list:
    """The rules that hit, in evaluation order."""
    results: dict[str, bool] = {}
    hits = []
    for rule in ruleset.rules:
        if rule.meta is not None:
            ok = rule.meta(results)
        else:
            try:
                ok = rule.check(view, ctx)
            except Exception:
                # a rule must never take classification down; a miss is the safe answer
                ok = False
        results[rule.id] = ok
        if ok:
            hits.append(rule)
    return hits
