"""Forged evidence is not believed: Authentication-Results only count from the institute's own
receiving server (mx.crm.cat in the sample settings), and a pass only when aligned with From."""

from __future__ import annotations

from guard.mail.message import parse

SCAM = (
    "From: Housing Desk <housing@crm.cat>\nTo: events@crm.cat\nSubject: Your room for the workshop\n"
    "Message-ID: <f1@x>\n\nDear participant, to keep your room please send your credit card number, "
    "expiry date and CVV today. Payment must be made within 24 hours.\n"
)


def _rules(raw: str, classifier) -> set[str]:
    return {r.rule for r in classifier.classify(parse(raw.encode())).reasons}


def test_a_header_from_another_server_is_ignored(classifier):
    forged = "Authentication-Results: mx.attacker.example; spf=pass; dkim=pass header.d=crm.cat; dmarc=pass\n" + SCAM
    assert "OFFICIAL_SENDER_AUTHENTICATED" not in _rules(forged, classifier)
    assert _rules(forged, classifier) == _rules(SCAM, classifier)


def test_a_pass_not_aligned_with_from_does_not_vouch(classifier):
    unaligned = ("Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom=stays.example; "
                 "dkim=pass header.d=stays.example\n" + SCAM)
    assert "OFFICIAL_SENDER_AUTHENTICATED" not in _rules(unaligned, classifier)


def test_a_forged_header_below_the_receiving_servers_is_ignored(classifier):
    below = ("Authentication-Results: mx.crm.cat; spf=fail smtp.mailfrom=stays.example; dkim=none; dmarc=fail header.from=crm.cat\n"
             "Received: from stays.example by mx.crm.cat\n"
             "Authentication-Results: mx.stays.example; dkim=pass header.d=crm.cat; dmarc=pass header.from=crm.cat\n" + SCAM)
    rules = _rules(below, classifier)
    assert "OFFICIAL_SENDER_AUTHENTICATED" not in rules and "AUTH_FAIL" in rules
    assert classifier.classify(parse(below.encode())).category in ("scam", "suspicious")


def test_the_receiving_servers_aligned_pass_is_believed(classifier):
    real = ("Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom=crm.cat; dkim=pass header.d=crm.cat; "
            "dmarc=pass header.from=crm.cat\nFrom: Núria <nhernandez@crm.cat>\nTo: events@crm.cat\nSubject: x\n\nHello\n")
    assert "OFFICIAL_SENDER_AUTHENTICATED" in _rules(real, classifier)
