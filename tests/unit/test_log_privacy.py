"""Logs hold identifiers only: a message with a card number, a password-like secret and a
distinctive body phrase goes through the daemon (real rules) with every log record captured,
in text and in JSON; none of the three appears anywhere."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import datetime, timezone

from daemon_fakes import FakeMailbox, FakeMailer

from guard.daemon.service import Daemon
from guard.daemon.journal import Journal
from guard.logging_setup import JsonFormatter, redact, setup_logging

CARD = "4111 1111 1111 1111"
CARD_DIGITS = "4111111111111111"
SECRET = "Tr0ub4dor&3-horse"
PHRASE = "purple elephants negotiate marmalade"

RAW = (
    "From: Conference Housing <booking@travel-housing.example>\r\n"
    "To: events@crm.cat\r\n"
    f"Subject: Your hotel for the workshop, card {CARD}\r\n"
    "Date: Mon, 05 Jan 2026 08:59:00 +0000\r\n"
    "Message-ID: <privacy-test@travel-housing.example>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "Dear speaker, we are the official hotel agency of the conference. To guarantee your room, "
    f"reply with your credit card number and CVV. Example: {CARD}, exp 12/28. "
    f"Your account password: {SECRET} . {PHRASE}.\r\n"
).encode()


def test_decision_log_and_all_logs_hold_no_body_card_or_secret(settings, classifier, caplog):
    stream = io.StringIO()
    handler = setup_logging("DEBUG", "json", stream)
    try:
        mb, mailer = FakeMailbox(), FakeMailer()
        journal = Journal(":memory:")
        journal.mailbox_state(mb.account, mb.mailbox, datetime(2026, 1, 1, tzinfo=timezone.utc))
        mb.deliver(RAW, datetime.now(timezone.utc))
        with caplog.at_level(logging.DEBUG):
            d = Daemon(settings, classifier=classifier, mode="live", once=True, mailbox=mb, mailer=mailer,
                       journal=journal)
            assert asyncio.run(d.run()) == 0
        assert d.executor.outcomes and d.executor.outcomes[0].category in ("scam", "suspicious")
    finally:
        logging.getLogger().removeHandler(handler)
    json_text = stream.getvalue()
    records = [json.loads(line) for line in json_text.splitlines()]
    decisions = [r for r in records if r["logger"] == "guard.decision"]
    assert decisions, "no per-message decision record"
    assert "privacy-test@travel-housing.example" in decisions[0]["message"]  # identifiers are there
    everything = json_text + "\n" + caplog.text + "\n".join(
        str(r.args) + r.getMessage() for r in caplog.records)
    for needle in (CARD, CARD_DIGITS, SECRET, PHRASE, "marmalade", "Your hotel for the workshop"):
        assert needle not in everything, needle
    # and not because the safety-net filter had to mask them: guard never logged them at all
    assert "[card number]" not in everything and "[redacted]" not in everything


def test_redaction_filter_masks_cards_and_secrets_from_any_logger():
    stream = io.StringIO()
    handler = setup_logging("INFO", "text", stream)
    try:
        logging.getLogger("guard.somewhere").warning("oops %s password=%s token: %s Authorization: Bearer %s",
                                                     CARD, SECRET, "abc.def", "eyJhbGciOi.abc.def")
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert CARD not in out and SECRET not in out and "eyJhbGciOi" not in out
    assert "[card number]" in out and "password=[redacted]" in out
    # a number that is not a card (fails Luhn) stays: UIDs, timestamps, message sizes
    assert redact("uid=1234567890123 size 4111111111111112") == "uid=1234567890123 size 4111111111111112"
    # nor identifiers that happen to hold a Luhn-valid run of digits (a Message-ID's timestamp)
    mid = "message_id=<c1.report.87.1795443870035945149@harness.example>"
    assert redact(mid) == mid


def test_json_format_is_one_object_per_line():
    rec = logging.LogRecord("guard.decision", logging.INFO, __file__, 1, "uid=%s category=%s", (7, "scam"), None)
    obj = json.loads(JsonFormatter().format(rec))
    assert obj["logger"] == "guard.decision" and obj["message"] == "uid=7 category=scam" and obj["level"] == "INFO"
