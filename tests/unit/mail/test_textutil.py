"""guard.mail.textutil.fold: the fast form is the plain definition (fold_reference)."""

import re
import sys

import pytest

from guard.mail.textutil import fold, fold_reference

TRICKY = [
    "", " ", "\n\t ", "Réservez   VOTRE chambre", "  ¿Está   aquí?  ", "Straße STRASSE ß ẞ", "Ørsted øre Ø",
    "Łódź łabędź", "Ελληνικά ΣΟΦΟΣ σοφός ς", "中文 邮件  转发：回复", "한국어 한글 조합", "emoji 👍🏽 🇪🇸 👨‍👩‍👧",
    "e\u0301 a\u0308 o\u0302\u0323 combining \u20dd \u0f71\u0f72", "ﬁ ﬀ ㎏ ① Ⅻ ｆｕｌｌ", "İstanbul ıi KELVIN \u212a ſ",
    "it’s ‘quoted’ “double” «guillemets» »x« ´acute `back`", "`ascii backtick`", "tab\tnew\nline\r\x0b\x0c\x1c\x1d\x1e\x1f\x85",
    "nbsp\u00a0thin\u2009ideo\u3000line\u2028para\u2029", "Ångström Ǆ ǅ ǆ ΐ ΰ ŉ", "\ud800 lone surrogate",
    "Vietnamese: Tiếng Việt có dấu", "Devanagari हिन्दी", "Arabic العربية مَرْحَبًا", "Hebrew שָׁלוֹם",
    "many marks: " + "".join(f"a{chr(c)}" for c in range(0x300, 0x370)),
    "Zalgo: Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034da",
]


@pytest.mark.parametrize("text", TRICKY)
def test_fold_is_the_reference(text):
    assert fold(text) == fold_reference(text)


def test_fold_every_code_point():
    """Each code point alone, and between letters, folds as the reference does (white space included)."""
    for start in range(0, sys.maxunicode + 1, 4096):
        chunk = [chr(c) for c in range(start, min(start + 4096, sys.maxunicode + 1)) if not 0xD800 <= c < 0xE000]
        for ch in chunk:
            assert fold(ch) == fold_reference(ch), hex(ord(ch))
        joined = "x".join(chunk)
        assert fold(joined) == fold_reference(joined), hex(start)
        assert fold("A " + " b ".join(chunk[:64]) + " Z") == fold_reference("A " + " b ".join(chunk[:64]) + " Z")


def test_split_is_backslash_s():
    """The premise of fold's white-space step: \\s, str.split and str.strip agree on every code point."""
    ws = re.compile(r"\s")
    for c in range(sys.maxunicode + 1):
        ch = chr(c)
        assert bool(ws.match(ch)) == ch.isspace() == (ch.split() == []) == (ch.strip() == ""), hex(c)


def _spans(rx, text):
    return [m.span() for m in rx.finditer(text)]


def test_card_candidate_is_the_reference_pattern():
    """The card-number pattern with its first repetition unrolled finds what the plain one finds."""
    import random

    from guard.mail.textutil import _CARD_CANDIDATE, _CARD_CANDIDATE_REFERENCE

    fixed = ["", "4111 1111 1111 1111", "x4111-1111-1111-1111y", "12345678901234567890123", "1 2 3 4 5 6 7 8 9 0 1 2 3",
             "1--2 3  4", "٤١١١١١١١١١١١١١١١", "00 4111111111111111 9", "41111111111111-", "-4111111111111 "]
    rnd = random.Random(7)
    alphabet = "0123456789 - x\n٣"
    texts = fixed + ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 45))) for _ in range(40_000)]
    for text in texts:
        assert _spans(_CARD_CANDIDATE, text) == _spans(_CARD_CANDIDATE_REFERENCE, text), text


def test_may_hold_link_is_false_only_where_no_link_pattern_can_match():
    import re

    from guard.mail.textutil import may_hold_link

    link = re.compile(r"(?i)(?:https?://|www\.)")
    for text in ["", "plain text", "WWW.crm.cat", "Www.x", "see https://x", "ftp://x", "www", "w w w.", "İwww.", "ＷＷＷ.x"]:
        assert may_hold_link(text) or not link.search(text), text
    assert not may_hold_link("no link here") and may_hold_link("WwW.example.org")
