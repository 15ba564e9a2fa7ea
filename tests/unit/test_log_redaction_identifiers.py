"""Log redaction keeps identifiers traceable and still masks real card numbers (guard/logging_setup.py).

Message-IDs may hold 13-19 digit runs (a timestamp, a counter) that happen to pass the Luhn check,
surrounded by any of RFC 5322's atext characters ($ ! # % ...); they are kept whole. A card number
anywhere else is masked: after ``card=``, before a CVV, two in a row."""

from __future__ import annotations

import io
import logging

import pytest

from guard.logging_setup import redact, setup_logging

CARD = "4111111111111111"  # Luhn-valid
MC = "5555 5555 5555 4444"  # Luhn-valid, grouped

KEEP = [
    "message_id=<1732712345678901234@mail.example>",
    "In-Reply-To: <abc$4111111111111111$def@mail.example>",
    "References: <a!4111111111111111!b@x.example> <c#4111111111111111%q@y.example>",
    "message_id=<CA+4111111111111111=x@mail.gmail.com> folder=Guard/Scam",
    "bare id 17327$4111111111111111$x@relay.example.org kept",
    "uid=4111111111111111 uidvalidity=4111111111111111 size: 4111111111111111",
    "x-request-id=4111111111111111",
    "path /var/spool/guard/4111111111111111/new",
    "token-like ref-4111111111111111 and abc.4111111111111111.def",
    "not a card (fails Luhn) 4111111111111112",
    "too long for a card 41111111111111111111111",
]

MASK = [
    ("card=4111111111111111", "card=[card number]"),
    ("cc: 4111 1111 1111 1111 123 exp 12/28", "cc: [card number] 123 exp 12/28"),
    (f"two cards {CARD} {MC}.", "two cards [card number] [card number]."),
    (f"amex 3782-822463-10005 then <x.{CARD}@id.example>", "amex [card number] then <x.4111111111111111@id.example>"),
    (f"uid=5 {CARD}", "uid=5 [card number]"),
    (f"({CARD})", "([card number])"),
]


@pytest.mark.parametrize("line", KEEP)
def test_identifiers_and_non_cards_are_kept(line):
    assert redact(line) == line


@pytest.mark.parametrize("line,expected", MASK)
def test_card_numbers_are_masked_anywhere_else(line, expected):
    assert redact(line) == expected


def test_filter_keeps_message_id_and_masks_card_in_the_same_record():
    stream = io.StringIO()
    handler = setup_logging("INFO", "json", stream)
    try:
        logging.getLogger("guard.decision").info("message_id=%s card=%s", "<x$4111111111111111$y@mail.example>", CARD)
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "<x$4111111111111111$y@mail.example>" in out
    assert "card=[card number]" in out


def test_long_lines_stay_fast():
    import time

    t = time.perf_counter()
    for line in ("a" * 200_000, "1" * 200_000, "<" + "a" * 200_000, "4111 " * 40_000, "x=1 " * 50_000):
        redact(line)
    assert time.perf_counter() - t < 5
