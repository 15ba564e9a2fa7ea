"""Classification: a parsed message and a rule set in, a :class:`Verdict` out. Pure.

The stages, in the order the evidence is read: every rule is evaluated on the message (hits and
misses both known; hit scores summed per category tag, the scam model one more scored signal in
buckets); each embedded message (forward, attachment, pasted block, quoted thread) is classified
on its own, as the suspect sent it; the intent model reads the author's own words with those
facts; :func:`guard.classification.decision.decide` picks the category from a table (see there).
Without an intent model the rule-score table decides, as it did before the model existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from guard.classification.decision import Evidence, decide
from guard.classification.matchers import MessageView, RuleContext
from guard.mail.message import ParsedMessage
from guard.classification.ruleset import CATEGORY_TAGS, Ruleset
from guard.settings import ThresholdSettings as Thresholds
from guard.classification.verdict import Reason, Verdict


class ScamModel(Protocol):
    def scam_probability(self, msg: ParsedMessage) -> float: ...


class IntentModel(Protocol):
    def probabilities(self, msg: ParsedMessage, outer: dict[str, float], outer_model_p: float | None,
                      inner: Verdict | None) -> dict[str, float]: ...


@dataclass(frozen=True)
class Classifier:
    ruleset: Ruleset
    context: RuleContext
    thresholds: Thresholds = Thresholds()
    model: ScamModel | None = None
    intent: IntentModel | None = None

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
        return self._verdict(msg, hits, inner, model_p, with_intent=not _inner)

    def _verdict(self, msg: ParsedMessage, hits: list, inner: Verdict | None, model_p: float | None,
                 with_intent: bool = True) -> Verdict:
        """The verdict from the rule hits. An embedded message (``with_intent`` False) is decided
        by its rules and the scam model alone: the intent model reads an author's own words
        above what they embed, and it is trained on rows whose embedded verdicts were decided
        that way (guard/learning/intent_training.py), so the two must agree."""
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
        intent = (self.intent.probabilities(msg, scores, model_p, inner)
                  if self.intent is not None and with_intent else None)
        evidence = Evidence(
            scores=scores,
            embedded=bool(msg.forwarded) and msg.forward_style != "quoted",
            quoted=msg.forward_style == "quoted",
            inner_category=inner.category if inner else None,
            intent=intent,
        )
        category, paid, staged = decide(evidence, self.thresholds)
        reasons.extend(staged)
        reasons.sort(key=lambda r: (-abs(r.score), r.rule))
        return Verdict(
            category=category,
            score=scores["scam"],
            scores=scores,
            reasons=tuple(reasons),
            inner=inner,
            paid=paid,
            model_p=model_p,
            defects=msg.defects,
        )


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
