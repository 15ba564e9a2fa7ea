"""The phrase matcher's token index and the bound on text rules read give the same answers as a
plain scan of every phrase over the whole text (the matcher as it was before the index)."""

from __future__ import annotations

import functools
import random
import re

from guard.classification.matchers import (
    NEGATIONS, RULE_HEAD_CHARS, RULE_TAIL_CHARS, MessageView, PhrasesMatcher, RuleContext, _SENTENCE_END,
    _bare, _phrase_body, bounded,
)
from guard.classification.ruleset import load_ruleset
from guard.mail.message import parse
from guard.mail.textutil import fold
from guard.paths import shipped


@functools.lru_cache(maxsize=None)
def _pattern(phrase: str) -> tuple[re.Pattern, frozenset[str]]:
    words = fold(phrase).split(" ")
    return re.compile(r"(?<!\w)" + _phrase_body(words) + r"(?!\w)"), frozenset(w for w in words if w != "*")


def reference(m: PhrasesMatcher, text: str) -> bool:
    """Every phrase's pattern scanned over the folded text, negations checked as documented."""
    found = 0
    for p in m.phrases:
        rx, own = _pattern(p)
        for occ in rx.finditer(text):
            if not m.unless_negated:
                found += 1
                break
            before = _SENTENCE_END.split(text[max(0, occ.start() - 80):occ.start()])[-1].split()[-3:]
            inside = [w for w in occ.group(0).split() if w not in own]
            if not any(_bare(w) in NEGATIONS for w in (*before, *inside)):
                found += 1
                break
    return found >= m.min


def shipped_phrase_matchers() -> list[PhrasesMatcher]:
    rs = load_ruleset(shipped("rules"))
    return [r.spec.match for r in rs.rules if isinstance(r.spec.match, PhrasesMatcher)]


def test_index_agrees_with_a_scan_of_every_phrase_on_generated_text():
    matchers = shipped_phrase_matchers()
    assert len(matchers) > 20
    vocab = sorted({w for m in matchers for p in m.phrases for w in fold(p).split(" ") if w != "*"})
    noise = ["the", "we", "no", "not", "sans", "nicht", "sem", ".", ",", "!", "déjà", "Réservez", "(", ")", "e.g.",
             "l'hotel", "\n", "-", "pay-ment", "ninguna", "«", "»"]
    rnd = random.Random(16)
    ctx = RuleContext()
    checks = [(m, m.compile()) for m in matchers]
    hits = 0
    for _ in range(200):
        words = [rnd.choice(vocab) if rnd.random() < 0.5 else rnd.choice(noise) for _ in range(rnd.randint(3, 60))]
        body = " ".join(words)
        view = MessageView(parse(f"From: a@example.org\nSubject: {rnd.choice(vocab)}\n\n{body}\n".encode()))
        for m, check in checks:
            expected = reference(m, view.field(m.field, True))
            assert check(view, ctx) == expected, (m.phrases[:3], body)
            hits += expected
    assert hits > 100  # the generated texts do hit phrases, negated and not


def test_long_text_keeps_its_start_and_its_end():
    head = "Official housing bureau. " + "lorem ipsum " * 3000
    tail = " please send your card number today."
    text = head + "x" * 10 + "middle-only-word " * 2000 + tail
    cut = bounded(text)
    assert len(cut) <= RULE_HEAD_CHARS + RULE_TAIL_CHARS + 3
    assert cut.startswith("Official housing bureau.") and cut.endswith(tail)
    assert "\n.\n" in cut  # a sentence end: no phrase and no negation reaches across the cut
    assert bounded("short text") == "short text"
    # whole words on both sides of the cut
    start, end = cut.split("\n.\n")
    assert text.startswith(start) and text.endswith(end)
    assert text[len(start)] in " \n" and text[-len(end) - 1] in " \n"


def test_rules_read_the_bounded_text():
    body = "We are the official hotel. " + "filler words here " * 5000 + "Pay by bank transfer now."
    view = MessageView(parse(f"From: a@example.org\nSubject: Rooms\n\n{body}\n".encode()))
    text = view.field("body", False)
    assert len(text) <= RULE_HEAD_CHARS + RULE_TAIL_CHARS + 3
    assert "official hotel" in text and text.endswith("Pay by bank transfer now.")
