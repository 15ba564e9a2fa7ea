"""The shortcuts rules and models take give the answers of the plain computation: the literal
prefilter of regex rules (``literal_prefilter``), the look-behind written after a phrase's first
word, the folded ``text`` field made from its subject and body, and the n-gram codes the scam
model and the intent model share."""

from __future__ import annotations

import random
import re
import re._casefix

import _sre
import numpy as np
import pytest

from guard.classification import features
from guard.classification.matchers import (
    _NOT_PLAIN, _WORD, MessageView, RegexMatcher, _phrase_body, _phrase_pattern, bounded, literal_prefilter,
)
from guard.classification.ruleset import load_ruleset
from guard.mail.message import parse
from guard.mail.textutil import fold
from guard.paths import shipped


def test_not_plain_lists_every_character_an_ascii_letter_matches_caselessly():
    """Every character other than a lower-case ASCII letter itself that ``re.I`` lets an ASCII
    letter match is caught by ``_NOT_PLAIN``."""
    letters = {ord(c) for c in "abcdefghijklmnopqrstuvwxyz"}
    extra = {x for k, v in re._casefix._EXTRA_CASES.items() if k in letters for x in v}
    for cp in range(0x110000):
        if cp in letters:
            assert not _NOT_PLAIN.search(chr(cp))
            continue
        if _sre.unicode_tolower(cp) in letters or cp in extra:
            assert _NOT_PLAIN.search(chr(cp)), hex(cp)


def _folded_regex_rules():
    rs = load_ruleset(shipped("rules"), None)
    out = []
    for r in rs.rules:
        m = r.spec.match
        if isinstance(m, RegexMatcher) and m.fold:
            out.append((r, m))
    return out


def _vocabulary(pattern: str) -> list[str]:
    words = re.findall(r"[a-z]{2,}", pattern)
    return sorted(set(words)) + ["the", "our", "please", "your", "hotel", "room", "public", "bicycle"]


def _random_texts(pattern: str, rng: random.Random, n: int) -> list[str]:
    vocab = _vocabulary(pattern)
    seps = [" ", " ", " ", ", ", ". ", "\n", "-", "'", " (", ") ", "? "]
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 14)):
            w = rng.choice(vocab)
            roll = rng.random()
            if roll < 0.1:
                w = w[: rng.randint(1, len(w))]  # a prefix: a substring but not the word
            elif roll < 0.15:
                w = w + rng.choice(["s", "ed", "ing", "x"])
            elif roll < 0.18:
                w = w.upper()
            elif roll < 0.2:
                w = w.replace("i", "\u0131").replace("s", "\u017f").replace("k", "\u212a")
            parts.append(w)
            parts.append(rng.choice(seps))
        texts.append("".join(parts))
    return texts


@pytest.mark.parametrize("rule_and_matcher", _folded_regex_rules(), ids=lambda x: x[0].id)
def test_prefilter_never_refuses_a_text_the_pattern_matches(rule_and_matcher):
    rule, m = rule_and_matcher
    rx = re.compile(m.pattern, (re.I if m.ignore_case else 0) | re.M)
    pre = literal_prefilter(rx)
    assert pre is not None
    rng = random.Random(rule.id)
    texts = _random_texts(m.pattern, rng, 3000) + list(rule.spec.examples.match) + list(rule.spec.examples.no_match)
    refused = matched = 0
    for raw in texts:
        for text in (raw, fold(raw)):
            hit = rx.search(text) is not None
            matched += hit
            plain = _NOT_PLAIN.search(text) is None
            if plain and not pre(text, frozenset(_WORD.findall(text))):
                refused += 1
                assert not hit, (rule.id, text)
    assert refused and matched  # the test exercised both sides


def test_rule_check_with_prefilter_equals_the_plain_search():
    rng = random.Random(7)
    for rule, m in _folded_regex_rules():
        rx = re.compile(m.pattern, (re.I if m.ignore_case else 0) | re.M)
        check = m.compile()
        for body in _random_texts(m.pattern, rng, 300) + list(rule.spec.examples.match):
            view = MessageView(parse(f"Subject: x\n\n{body}".encode()))
            assert check(view, None) == (rx.search(view.field(m.field, True)) is not None), (rule.id, body)


@pytest.mark.parametrize("pattern, texts", [
    (r"\b(credit|debit) card\b", ["my credit card", "credit cards", "xcredit card", "credit  card"]),
    (r"\b(send|share)\b.{0,20}\b(iban|bic)\b", ["send the bic", "send public", "share iban", "sender bic"]),
    (r"guarantee[ds]? (?:it |them )?with\b", ["guaranteed it with", "guarantee with", "guarantees them withx"]),
    (r"(?:ab)+c|x{2,}y", ["ababc", "xxxy", "xy", "abx"]),
    (r"\bfoo(?=bar)|baz", ["foobar", "foo bar", "baz"]),
])
def test_prefilter_on_small_patterns(pattern, texts):
    rx = re.compile(pattern, re.I | re.M)
    pre = literal_prefilter(rx)
    assert pre is not None
    for text in texts:
        if rx.search(text):
            assert pre(text, frozenset(_WORD.findall(text))), text


@pytest.mark.parametrize("pattern", [r"(?i:card)", r"(?x) card", r"\w+", r"a|.", r"[?¿]"])
def test_no_prefilter_when_the_pattern_asks_for_no_literal_or_has_inline_flags(pattern):
    assert literal_prefilter(re.compile(pattern, re.I)) is None


def test_phrase_pattern_matches_where_the_look_behind_form_does():
    rng = random.Random(3)
    phrases = ["is this legit", "a scam?", "confirm * dates", "double-check", "e golpe", "ist das echt", "*", "do you use"]
    vocab = ["is", "this", "legit", "a", "scam", "confirm", "your", "dates", "double", "check", "e", "golpe", "ist",
             "das", "echt", "do", "you", "use", "xis", "isx"]
    texts = [" ".join(rng.choice(vocab) + rng.choice(["", "", "?", "-", "."]) for _ in range(rng.randint(1, 12)))
             for _ in range(2000)]
    for p in phrases:
        words = fold(p).split(" ")
        old = re.compile(r"(?<!\w)" + _phrase_body(words) + r"(?!\w)")
        new = re.compile(_phrase_pattern(words))
        for t in texts:
            assert [m.span() for m in old.finditer(t)] == [m.span() for m in new.finditer(t)], (p, t)


@pytest.mark.parametrize("subject, body", [
    ("Réservez   VOTRE chambre", "Ça  coûte\n\n 200 €"),
    ("", "only a body"),
    ("only a subject", ""),
    ("  ", "\u2003 body \u00a0"),
    ("ΑΣ", "\u0301accent first"),
    ("ℌello İstanbul ß", "ﬁne ㎏"),
    ("trailing", "body\n\n  \u00a0\n"),
    ("quoted", "my words\n> their words\n> more"),
])
def test_folded_text_field_is_the_fold_of_the_whole_text(subject, body):
    msg = parse(f"Subject: {subject}\nContent-Type: text/plain; charset=utf-8\n\n{body}".encode())
    view = MessageView(msg)
    for name in ("text", "full_text", "body", "subject"):
        raw = bounded(view._raw(name))
        assert view.field(name, True) == fold(raw)
        assert view.words(name) == frozenset(_WORD.findall(fold(raw)))


def test_shared_ngram_codes_are_the_computed_ones_and_read_only():
    text = features.normalise("Subject\nPlease send your credit card number to hotel@example.org " * 80)
    first = features.char_codes(text)
    again = features.char_codes(text)
    assert again is first and not first.flags.writeable
    assert np.array_equal(first, features._char_codes(text[: features.CHAR_CHARS]))
    docs = features.Documents(text=text, subject="subject words", meta=())
    codes = features.word_codes(docs)
    assert codes.flags.writeable  # a fresh array for the caller
    c = features._codepoints(docs.subject)
    subj = features._span_codes(c, *features._word_spans(c), features._SALT_SUBJECT)
    assert np.array_equal(codes, np.concatenate((features._text_word_codes(text), subj)))
    bare = features.word_codes(features.Documents(text=text, subject="", meta=()))
    assert np.array_equal(bare, features._text_word_codes(text))
