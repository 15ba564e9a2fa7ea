"""The decision table (guard.classification.decision): each row, and the rule-score fallback."""

from __future__ import annotations

import pytest

from guard.classification.decision import Evidence, decide
from guard.settings import ThresholdSettings

T = ThresholdSettings()
ZERO = {"scam": 0.0, "report": 0.0, "inquiry": 0.0, "automated": 0.0, "paid": 0.0}


def p(**kw) -> dict[str, float]:
    base = dict.fromkeys(("doubt", "paid", "ask", "inform", "scam", "automated"), 0.0)
    base.update(kw)
    rest = 1.0 - sum(base.values())
    base["inform"] += max(rest, 0.0)
    return base


def ev(intent, *, scores=None, embedded=False, quoted=False, inner=None):
    return Evidence({**ZERO, **(scores or {})}, embedded, quoted, inner, intent)


def category(e):
    return decide(e, T)[0]


def test_a_forwarded_scam_with_a_minimal_question_is_a_report():
    assert category(ev(p(ask=0.6, doubt=0.2), embedded=True, inner="scam")) == "report"


def test_a_forward_of_a_genuine_message_with_a_question_is_an_inquiry():
    assert category(ev(p(ask=0.8), embedded=True, inner="other")) == "inquiry"


def test_a_described_report_without_a_forward():
    assert category(ev(p(doubt=0.7))) == "report"
    assert category(ev(p(doubt=0.35, ask=0.5))) == "inquiry"  # unsure: a person reads it


def test_paid_is_an_attribute_of_a_report_only():
    c, paid, reasons = decide(ev(p(paid=0.6, doubt=0.2), embedded=True, inner="scam"), T)
    assert (c, paid) == ("report", True) and any(r.rule == "AUTHOR_ALREADY_PAID" for r in reasons)
    # an inquiry that mentions paying a fee is never "paid"
    c, paid, _ = decide(ev(p(ask=0.7, paid=0.2)), T)
    assert (c, paid) == ("inquiry", False)


def test_a_scam_posing_as_a_forward_is_not_a_report():
    assert category(ev(p(scam=0.9, doubt=0.05), embedded=True, inner="scam")) == "scam"


def test_a_quoted_genuine_thread_is_not_a_report():
    assert category(ev(p(ask=0.7), quoted=True, inner="other")) == "inquiry"


def test_scam_and_the_review_band():
    assert category(ev(p(scam=0.85))) == "scam"
    assert category(ev(p(scam=0.6))) == "suspicious"
    assert category(ev(p(ask=0.6, scam=0.1), scores={"scam": T.scam})) == "scam"
    assert category(ev(p(ask=0.6, scam=0.1), scores={"scam": T.suspicious})) == "suspicious"


def test_the_rule_sum_decides_only_where_the_learned_stage_has_not_ruled_scam_out():
    """A participant asking for their own visa letter hits passport and visa-fee rules: the learned
    stage, sure it is no scam, decides; the same sum with some learned doubt still quarantines."""
    from guard.classification.decision import RULES_COUNT_P

    below = RULES_COUNT_P / 2
    assert category(ev(p(ask=0.9, scam=below), scores={"scam": T.scam})) == "inquiry"
    assert category(ev(p(ask=0.9, scam=below), scores={"scam": T.suspicious})) == "inquiry"
    assert category(ev(p(ask=0.6, scam=RULES_COUNT_P), scores={"scam": T.scam})) == "scam"
    assert category(ev(p(scam=0.85))) == "scam"  # the learned stage alone still quarantines


def test_automated_by_headers_first_and_by_intent_later():
    assert category(ev(p(ask=0.9), scores={"automated": T.automated})) == "automated"
    assert category(ev(p(automated=0.7))) == "automated"
    # a report that happens to carry an automated marker stays a report when it embeds a suspect message
    assert category(ev(p(doubt=0.8), scores={"automated": T.automated}, embedded=True, inner="scam")) == "report"


def test_other_only_when_the_writer_clearly_informs():
    assert category(ev(p(inform=0.9, ask=0.05))) == "other"
    assert category(ev(p(inform=0.55, ask=0.31))) == "inquiry"


@pytest.mark.parametrize("scores,forward,expected", [
    ({"report": T.report}, True, "report"),
    ({"scam": T.scam}, False, "scam"),
    ({"automated": T.automated}, False, "automated"),
    ({"scam": T.suspicious}, False, "suspicious"),
    ({"inquiry": T.inquiry}, False, "inquiry"),
    ({}, False, "other"),
])
def test_without_an_intent_model_the_rule_table_decides(scores, forward, expected):
    assert category(ev(None, scores=scores, embedded=forward)) == expected


def test_a_quoted_genuine_message_the_author_doubts_is_a_report():
    assert category(ev(p(doubt=0.6, ask=0.3), quoted=True, inner="other")) == "report"
    assert category(ev(p(doubt=0.35, ask=0.6), quoted=True, inner="other")) == "inquiry"
