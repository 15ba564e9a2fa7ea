"""The decision: one category from the staged evidence. Pure; first row that holds wins.

The stages before it (in :mod:`guard.classification.classify`) are read in this order:

1. *automated*: header and MIME evidence (RFC 3834 Auto-Submitted, RFC 3464 / 8098 reports, list
   headers, autoresponders, the null sender, ...), the ``automated`` rules;
2. *structure*: the author's own text apart from every embedded message (``guard.mail``);
3. *embedded verdict*: each embedded message classified as the suspect sent it;
4. *intent*: the learned model over the author's own words and the facts above
   (:mod:`guard.classification.intent`);
5. this table.

=====  ===========  ===========================================================================
 row    category     holds when
=====  ===========  ===========================================================================
 1      automated    automated score >= T_automated, unless a suspect message is embedded and
                     the author reads as reporting it, or the scam evidence of row 3 holds
 2      report       a third-party message is embedded and it is at least suspicious or the
                     author doubts it (P(report) >= DOUBT_P), or a quoted thread holds a suspect
                     message, or the author describes or doubts one (P(report) >= DESCRIBED_P),
                     and the author is not scam-like; ``paid`` when P(paid) >= P(doubt)
 3      scam         P(scam) >= SCAM_P, or scam score >= T_scam and P(scam) >= RULES_COUNT_P
 4      suspicious   P(scam) >= SUSPICIOUS_P (the review band), or scam score >= T_suspicious and
                     P(scam) >= RULES_COUNT_P
 5      automated    P(automated) >= AUTOMATED_P
 6      inquiry      P(ask) >= ASK_P or P(ask) >= P(inform), or inquiry score >= T_inquiry:
                     inquiry when unsure, because a person then reads it
 7      other        otherwise
=====  ===========  ===========================================================================

The scam rules' sum is evidence the learned stage already reads (as features); it decides on
its own only where that stage has not ruled scam out (P(scam) >= RULES_COUNT_P). A participant
asking for their own visa letter hits the rules about passports and visa-letter fees, and the
learned stage, which reads who asks whom, is the one to say that this is no scam.

Without an intent model (``guard classify --no-model``) the rule-score table of
:func:`rule_table` decides, as before the model existed.
"""

from __future__ import annotations

from dataclasses import dataclass

from guard.classification.verdict import Reason
from guard.settings import ThresholdSettings

SCAM_P = 0.80
SUSPICIOUS_P = 0.50
AUTOMATED_P = 0.60
ASK_P = 0.30
DOUBT_P = 0.40
#: below this P(scam) the scam rules' sum does not make a message scam or suspicious (grouped CV
#: of the own examples: inquiries routed 95.7 -> 96.1 %, scams quarantined 92.6 -> 92.4 %)
RULES_COUNT_P = 0.05
DESCRIBED_P = 0.45  # chosen by grouped CV of the own examples (0.60: reports 87.3 %, 0.45: 90.7 %, inquiries 95.5 -> 95.3 %)


@dataclass(frozen=True)
class Evidence:
    scores: dict[str, float]  # rule sums per tag of the message itself
    embedded: bool  # a third-party message is attached, forwarded or pasted
    quoted: bool  # a quoted thread (a reply) is embedded
    inner_category: str | None  # the embedded message's own verdict
    intent: dict[str, float] | None  # P per intent of the author's own words, None without a model


def _reason(rule: str, text: str, tags: tuple[str, ...]) -> Reason:
    return Reason(rule, text, 0.0, tags)


def decide(e: Evidence, t: ThresholdSettings) -> tuple[str, bool, tuple[Reason, ...]]:
    """(category, paid, the structural and learned reasons behind it)."""
    if e.intent is None:
        category = rule_table(e.scores, e.embedded or (e.quoted and e.inner_category in ("scam", "suspicious")), t)
        return category, category == "report" and e.scores.get("paid", 0.0) >= t.paid, ()
    p = e.intent
    s = e.scores
    p_report = p["doubt"] + p["paid"]
    suspect_inside = e.inner_category in ("scam", "suspicious") and (e.embedded or e.quoted)
    author_scamlike = p["scam"] >= SUSPICIOUS_P and p["scam"] > p_report
    reasons: list[Reason] = []
    if suspect_inside:
        reasons.append(_reason("EMBEDS_SUSPECT_MESSAGE", "Forwards or quotes a message that itself reads as a scam",
                               ("report",)))

    # automated markers are the sender's to set: they never outweigh scam evidence (a phishing mail
    # from "noreply@" is quarantined, not filed as a notification)
    rule_scam = s.get("scam", 0.0) if p["scam"] >= RULES_COUNT_P else 0.0
    scam_evidence = rule_scam >= t.scam or p["scam"] >= SCAM_P
    if s.get("automated", 0.0) >= t.automated and not (suspect_inside and p_report >= DOUBT_P) and not scam_evidence:
        return "automated", False, tuple(reasons)

    reported = not author_scamlike and (
        (e.embedded and (suspect_inside or p_report >= DOUBT_P))
        or (e.quoted and suspect_inside)
        or p_report >= DESCRIBED_P
    )
    if reported:
        paid = p["paid"] >= p["doubt"]
        reasons.append(_reason("AUTHOR_REPORTS", f"The writer's own words ask about or warn of a suspect message "
                                                 f"(learned, P={p_report:.2f})", ("report",)))
        if paid:
            reasons.append(_reason("AUTHOR_ALREADY_PAID", "The writer says they already paid or gave their details "
                                                          f"(learned, P={p['paid'] / max(p_report, 1e-9):.2f} of the report)",
                                   ("paid", "report")))
        return "report", paid, tuple(reasons)

    if author_scamlike:
        reasons.append(_reason("AUTHOR_SCAM_LIKE", f"The writer's own words read like a scam (learned, P={p['scam']:.2f})",
                               ("scam",)))
    if scam_evidence:
        return "scam", False, tuple(reasons)
    if rule_scam >= t.suspicious or p["scam"] >= SUSPICIOUS_P:
        return "suspicious", False, tuple(reasons)
    if p["automated"] >= AUTOMATED_P:
        reasons.append(_reason("READS_AUTOMATED", f"Reads as mail no person wrote (learned, P={p['automated']:.2f})",
                               ("automated",)))
        return "automated", False, tuple(reasons)
    if p["ask"] >= ASK_P or p["ask"] >= p["inform"] or s.get("inquiry", 0.0) >= t.inquiry:
        reasons.append(_reason("AUTHOR_ASKS", f"The writer asks the events office for something (learned, P={p['ask']:.2f})",
                               ("inquiry",)))
        return "inquiry", False, tuple(reasons)
    reasons.append(_reason("AUTHOR_INFORMS", f"The writer informs or thanks; nothing to answer (learned, "
                                             f"P={p['inform']:.2f})", ()))
    return "other", False, tuple(reasons)


def rule_table(s: dict[str, float], has_forward: bool, t: ThresholdSettings) -> str:
    """The rule-score table (no intent model): reports first, because a forward quotes its scam."""
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
