"""Each matcher kind, the domain helpers, card numbers, and the verdict table."""

from __future__ import annotations

import pytest

from guard.classification.classify import Classifier, Thresholds
from guard.mail.domains import find_lookalike, registrable, skeleton
from guard.classification.matchers import (
    AttachmentMatcher,
    AuthMatcher,
    CardNumberMatcher,
    DefectsMatcher,
    DomainMatcher,
    ForwardedMatcher,
    HeaderMatcher,
    ImpersonationMatcher,
    InnerMatcher,
    LookalikeMatcher,
    MessageView,
    ModelMatcher,
    PhrasesMatcher,
    RegexMatcher,
    ReplyToDiffersMatcher,
    RuleContext,
)
from guard.mail.message import parse
from guard.classification.ruleset import load_ruleset
from guard.mail.textutil import find_card_numbers, fold, luhn_ok, mask_card_numbers

CTX = RuleContext(
    official_domains=("crm.cat",),
    official_names=("crm", "mfml2026"),
    lists={"freemail": frozenset({"gmail.com"}), "allowlist": frozenset({"friend@uni.example"})},
    display_names=("crm", "nuria hernandez"),
    trusted_authserv_ids=("mx.crm.cat",),
)


def hit(matcher, raw: str, inner=None, model_p=None) -> bool:
    return matcher.compile()(MessageView(parse(raw.encode()), inner, model_p), CTX)


def test_header_matcher():
    m = HeaderMatcher(type="header", name="Precedence", pattern="^bulk$")
    assert hit(m, "Precedence: bulk\n\nx") and not hit(m, "Precedence: first\n\nx")
    assert hit(HeaderMatcher(type="header", name="List-Id"), "List-Id: <a>\n\nx")


def test_regex_matcher_fields():
    assert hit(RegexMatcher(type="regex", field="subject", pattern="^urgent"), "Subject: URGENT payment\n\nx")
    assert not hit(RegexMatcher(type="regex", field="body", pattern="urgent"), "Subject: urgent\n\nnothing")
    assert hit(RegexMatcher(type="regex", field="from_addr", pattern="^noreply@"), "From: x <noreply@a.example>\n\ny")


def test_phrases_ignore_case_diacritics_and_wildcards():
    m = PhrasesMatcher(type="phrases", phrases=["hébergement officiel", "confirm * dates"])
    assert hit(m, "Subject: x\n\nNous sommes l'HEBERGEMENT Officiel.")
    assert hit(m, "Subject: x\n\nPlease confirm your arrival dates.")
    assert not hit(m, "Subject: x\n\nhébergements officiels")  # whole words only
    assert hit(PhrasesMatcher(type="phrases", phrases=["a b", "c d"], min=2), "Subject: x\n\nA B and C D")
    assert not hit(PhrasesMatcher(type="phrases", phrases=["a b", "c d"], min=2), "Subject: x\n\nA B only")


def test_domain_matcher_places_and_lists():
    m = DomainMatcher(type="domain", where=["from"], lists=["freemail"])
    assert hit(m, "From: a@mail.gmail.com\n\nx") and not hit(m, "From: a@uni.example\n\nx")
    assert hit(DomainMatcher(type="domain", where=["reply_to"], domains=["evil.example"]), "Reply-To: x@sub.evil.example\n\ny")
    assert hit(DomainMatcher(type="domain", where=["urls"], domains=["evil.example"]), "Subject: x\n\nhttps://pay.evil.example/a")
    assert hit(DomainMatcher(type="domain", where=["return_path"], domains=["evil.example"]), "Return-Path: <b@evil.example>\n\ny")
    assert hit(DomainMatcher(type="domain", where=["from"], lists=["allowlist"]), "From: friend@uni.example\n\ny")
    assert not hit(DomainMatcher(type="domain", where=["from"], lists=["allowlist"]), "From: other@uni.example\n\ny")


@pytest.mark.parametrize(
    "domain,how",
    [("crrn.cat", "homoglyph"), ("сrm.cat", "homoglyph"), ("crm-housing.com", "name-inside"), ("crm.cat.booking.example", "name-inside"),
     ("mfml2026-hotels.com", "name-inside"), ("crm.cat", None), ("events.crm.cat", None), ("uab.cat", None), ("gmail.com", None)],
)
def test_lookalike(domain, how):
    found = find_lookalike(domain, ("crm.cat",), ("crm", "mfml2026"))
    assert (found.how if found else None) == how


def test_the_same_short_name_under_another_suffix_is_not_a_lookalike_by_itself():
    assert find_lookalike("ua.pt", ("ua.es",), ()) is None  # Aveiro is not imitating Alicante
    assert find_lookalike("uа.pt", ("ua.es",), ()).how == "homoglyph"  # a Cyrillic "а" is
    assert find_lookalike("birs.com", ("birs.ca",), ()).how == "homoglyph"  # four letters and more: still
    assert find_lookalike("crm.com", ("crm.cat",), ("crm",)).how == "name-inside"  # own names stay protected


def test_lookalike_edit_distance_on_longer_names():
    assert find_lookalike("birs-ca.org", ("birs.ca",), ()) is None
    assert find_lookalike("uniivesity.edu", ("university.edu",), ()).how == "edit-distance"
    assert find_lookalike("bir5.ca", ("birs.ca",), ()).how in ("homoglyph", "edit-distance")


@pytest.mark.parametrize("domain,official,imitates", [
    ("unipi.it", "unimi.it", False),  # Pisa is not imitating Milan: one letter for another
    ("unipd.it", "unimi.it", False), ("bris.ca", "birs.ca", True), ("birrs.ca", "birs.ca", True),
    ("bir5.ca", "birs.ca", True), ("bi-rs.ca", "birs.ca", True), ("bir.ca", "birs.ca", False),
    ("unimii.it", "unimi.it", True), ("unmii.it", "unimi.it", True),
])
def test_short_names_are_imitated_by_typos_not_by_any_one_letter(domain, official, imitates):
    assert (find_lookalike(domain, (official,), ()) is not None) == imitates


def test_lookalike_matcher_and_registrable():
    assert hit(LookalikeMatcher(type="lookalike", where=["from"]), "From: a@crrn.cat\n\nx")
    assert not hit(LookalikeMatcher(type="lookalike", where=["from"]), "From: a@crm.cat\n\nx")
    assert registrable("a.b.example.co.uk") == "example.co.uk"
    assert skeleton("rn") == skeleton("m")


def test_impersonation():
    m = ImpersonationMatcher(type="impersonation")
    assert hit(m, "From: Núria Hernández <nh.crm@gmail.com>\n\nx")
    assert hit(m, "From: CRM Housing <a@booking.example>\n\nx")
    assert not hit(m, "From: Núria Hernández <nhernandez@crm.cat>\n\nx")
    assert not hit(m, "From: Acrmon Travel <a@booking.example>\n\nx")


def test_reply_to_differs():
    m = ReplyToDiffersMatcher(type="reply_to_differs")
    assert hit(m, "From: a@hotel.example\nReply-To: b@gmail.com\n\nx")
    assert not hit(m, "From: a@hotel.example\nReply-To: b@mail.hotel.example\n\nx")
    assert hit(ReplyToDiffersMatcher(type="reply_to_differs", compare="address"), "From: a@h.example\nReply-To: b@h.example\n\nx")


def test_auth_matcher():
    m = AuthMatcher(type="auth", methods=["dmarc"], results=["fail"])
    assert hit(m, "Authentication-Results: mx.crm.cat; dmarc=fail\n\nx")
    assert not hit(m, "Authentication-Results: mx.crm.cat; dmarc=pass\n\nx")
    # only the institute's receiving server is believed
    assert not hit(m, "Authentication-Results: mx.other.example; dmarc=fail\n\nx")


def test_auth_matcher_believes_a_pass_only_aligned_with_from():
    m = AuthMatcher(type="auth", methods=["dkim", "dmarc"], results=["pass"])
    aligned = "Authentication-Results: mx.crm.cat; dkim=pass header.d=mail.uab.cat\nFrom: a@uab.cat\n\nx"
    elsewhere = "Authentication-Results: mx.crm.cat; dkim=pass header.d=stays.example\nFrom: a@crm.cat\n\nx"
    below = ("Authentication-Results: mx.crm.cat; dkim=none\nReceived: x\n"
             "Authentication-Results: mx.stays.example; dkim=pass header.d=crm.cat\nFrom: a@crm.cat\n\nx")
    assert hit(m, aligned) and not hit(m, elsewhere) and not hit(m, below)


def test_card_numbers_luhn_and_masking():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    text = "card 4111 1111 1111 1111, phone 0034 612 345 678, ref 1234567890123"
    assert len(find_card_numbers(text)) == 1
    masked = mask_card_numbers(text)
    assert "4111 1111" not in masked and "1111" in masked and "0034 612 345 678" in masked
    assert hit(CardNumberMatcher(type="card_number"), "Subject: x\n\n5500-0000-0000-0004")


def test_forwarded_attachment_defects_inner_model():
    fwd = "Subject: x\n\nhi\n\n---------- Forwarded message ---------\nFrom: a@b.example\nSubject: s\nDate: Mon, 3 Nov 2025\n\nbody"
    assert hit(ForwardedMatcher(type="forwarded"), fwd)
    assert hit(ForwardedMatcher(type="forwarded", styles=["gmail"]), fwd)
    assert not hit(ForwardedMatcher(type="forwarded", styles=["apple"]), fwd)
    att = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/pdf; name=Invoice.pdf\n\nx\n--b--\n"
    assert hit(AttachmentMatcher(type="attachment", filename=r"invoice\.pdf$"), att)
    assert hit(DefectsMatcher(type="defects", pattern="missing From"), "Subject: x\n\ny")
    assert hit(InnerMatcher(type="inner", categories=["scam"]), "Subject: x\n\ny", inner="scam")
    assert not hit(InnerMatcher(type="inner", categories=["scam"]), "Subject: x\n\ny", inner=None)
    assert hit(ModelMatcher(type="model", min=0.9), "Subject: x\n\ny", model_p=0.95)
    assert not hit(ModelMatcher(type="model", min=0.9), "Subject: x\n\ny", model_p=0.5)
    assert not hit(ModelMatcher(type="model", min=0.0), "Subject: x\n\ny", model_p=None)


def test_fold():
    assert fold("  Réservez   VOTRE  chambre ") == "reservez votre chambre"
    assert fold("l’hôtel") == "l'hotel"


def _classifier_with(tmp_path, rules: str) -> Classifier:
    d = tmp_path / "r"
    d.mkdir()
    (d / "r.toml").write_text(rules, encoding="utf-8")
    return Classifier(load_ruleset(d), CTX, Thresholds())


RULE = '''
[[rule]]
id = "{id}"
description = "Test rule {id}"
score = {score}
tags = ["{tag}"]
[rule.match]
type = "phrases"
phrases = ["{word}"]
[rule.examples]
match = ["Subject: x\\n\\n{word}"]
no_match = ["Subject: x\\n\\nnothing"]
'''


@pytest.mark.parametrize(
    "text,category",
    [
        ("scamword scamword2", "scam"),
        ("susword", "suspicious"),
        ("reportword scamword scamword2", "scam"),  # no forward: a report must not read as a scam
        ("reportword susword", "report"),
        ("autoword scamword scamword2", "scam"),
        ("autoword reportword", "automated"),
        ("askword", "inquiry"),
        ("plain", "other"),
    ],
)
def test_category_table(tmp_path, text, category):
    rules = "".join([
        RULE.format(id="S1", score=3.0, tag="scam", word="scamword"),
        RULE.format(id="S2", score=2.0, tag="scam", word="scamword2"),
        RULE.format(id="SU", score=2.5, tag="scam", word="susword"),
        RULE.format(id="R1", score=3.0, tag="report", word="reportword"),
        RULE.format(id="A1", score=3.0, tag="automated", word="autoword"),
        RULE.format(id="I1", score=1.0, tag="inquiry", word="askword"),
    ])
    v = _classifier_with(tmp_path, rules).classify(parse(f"Subject: t\n\n{text}".encode()))
    assert v.category == category
    assert [r.score for r in v.reasons] == sorted((r.score for r in v.reasons), key=lambda s: -abs(s))


def test_phrases_unless_negated():
    m = PhrasesMatcher(type="phrases", phrases=["prepayment is required", "deposito no reembolsable", "ich habe * gegeben"],
                       unless_negated=True)
    assert hit(m, "Subject: x\n\nFull prepayment is required today.")
    assert not hit(m, "Subject: x\n\nNo prepayment is required.")
    assert hit(m, "Subject: x\n\nNo breakfast. Prepayment is required.")  # another sentence
    assert hit(m, "Subject: x\n\nSe requiere un depósito no reembolsable.")  # the phrase's own "no"
    assert not hit(m, "Subject: x\n\nIch habe ihnen nichts gegeben.")  # inside the * span
    assert hit(m, "Subject: x\n\nIch habe ihnen meine Karte gegeben.")
    # one plain occurrence is enough even when another is negated
    assert hit(m, "Subject: x\n\nNo prepayment is required, they said. Now: prepayment is required!")
