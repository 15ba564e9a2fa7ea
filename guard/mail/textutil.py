"""Small pure text helpers shared by the parser, the rules and the model.

Kept in one place so that rule phrase matching and model features see text
normalised the same way.
"""

from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "´": "'", "`": "'", "“": '"', "”": '"', "«": '"', "»": '"'})
#: _QUOTES as (character, replacement) pairs: no replacement is itself replaced, so replacing them
#: one after the other is the same as translating, and a ``in`` scan per quote is far cheaper than
#: ``str.translate`` over non-ASCII text (a dictionary look-up per character)
_QUOTE_PAIRS = tuple((chr(k), v) for k, v in _QUOTES.items())
#: with more distinct combining marks than this in one text, one translate beats a replace per mark
_MAX_MARK_REPLACES = 6


def fold(text: str) -> str:
    """Case- and diacritic-insensitive form: casefold, strip accents, collapse spaces.

    "Réservez   VOTRE chambre" -> "reservez votre chambre". Letters that do not
    decompose (ø, ł, ß->ss via casefold) are kept as casefold gives them.

    It is called for every field of every message (rules, forward markers, author cues), so it
    avoids per-character Python work: ASCII text (most of it) needs only the backtick replaced and
    ``lower`` (which is ``casefold`` on ASCII; ASCII is its own NFKD form, without combining marks);
    otherwise combining marks are found among the text's distinct characters and removed with
    ``str.replace``. ``" ".join(text.split())`` is ``_WS.sub(" ", text).strip()``: ``\\s``, ``split``
    and ``strip`` all use ``str.isspace`` (tests/unit/mail/test_textutil.py checks every code point).
    :func:`fold_reference` is the plain definition.
    """
    if text.isascii():
        if "`" in text:
            text = text.replace("`", "'")
        return " ".join(text.lower().split())
    for quote, plain in _QUOTE_PAIRS:
        if quote in text:
            text = text.replace(quote, plain)
    text = text.casefold()
    if not text.isascii():
        text = strip_marks(unicodedata.normalize("NFKD", text))
    return " ".join(text.split())


def may_hold_link(text: str) -> bool:
    """False when no link pattern (``http://``, ``https://``, ``www.``, in any case) can match in
    ``text``: it has no "://" and no "www." (``lower`` maps those characters one by one, and no
    other character lower-cases to them). The parser, the language detector and the model's
    normalisation run their link patterns only when this is True."""
    return "://" in text or "www." in text.lower()


def strip_marks(decomposed: str) -> str:
    """``decomposed`` (NFKD text) without its combining marks, found among its distinct characters
    and removed with ``str.replace`` (one ``translate`` when there are many): no per-character
    Python work. Shared by :func:`fold` and the model's feature normalisation."""
    marks = [ch for ch in set(decomposed) if ch > "\x7f" and unicodedata.combining(ch)]
    if len(marks) <= _MAX_MARK_REPLACES:
        for mark in marks:
            decomposed = decomposed.replace(mark, "")
        return decomposed
    return decomposed.translate(dict.fromkeys(map(ord, marks)))


def fold_reference(text: str) -> str:
    """:func:`fold` written the plain way, character by character (the reference its tests compare with)."""
    text = text.translate(_QUOTES).casefold()
    if not text.isascii():  # ASCII is its own NFKD form and has no combining marks
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _WS.sub(" ", text).strip()


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode bytes with the declared charset, falling back safely.

    Returns (text, defect) where defect names what went wrong, or None.
    Never raises: unknown charsets and charsets that lie (bytes invalid in the
    declared encoding) fall back to UTF-8, then Windows-1252 with replacement.
    """
    defect = None
    cs = (charset or "").strip().strip('"').lower() or None
    if cs:
        try:
            return data.decode(cs), None
        except LookupError:
            defect = f"unknown charset {cs[:40]!r}"
        except (UnicodeDecodeError, ValueError):
            defect = f"bytes invalid in declared charset {cs[:40]!r}"
        except Exception:  # some codecs raise odd errors on odd input
            defect = f"charset {cs[:40]!r} failed to decode"
    try:
        return data.decode("utf-8"), defect
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), defect or ("undeclared 8-bit text" if cs is None else defect)


def luhn_ok(digits: str) -> bool:
    """True when a digit string passes the Luhn check used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# 13-19 digits, optionally grouped by single spaces or hyphens (as people type them), not inside a
# longer run of digits. Written as ``(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)`` (_CARD_CANDIDATE_REFERENCE)
# with its first repetition unrolled and the look-behind after the first digit: the same matches
# at the same places, but the pattern starts with ``\d``, so ``re`` skips to the next digit instead
# of trying the look-behind at every position (a rule runs it on every message: 3.5 times as fast).
_CARD_CANDIDATE = re.compile(r"\d(?<!\d\d)[ -]?(?:\d[ -]?){11,17}\d(?!\d)")
_CARD_CANDIDATE_REFERENCE = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")


def find_card_numbers(text: str) -> list[tuple[int, int]]:
    """Spans of plausible payment-card numbers (length 13-19, Luhn-valid, not one repeated digit).

    Only spans are returned, never the digits, so callers cannot log them by accident.
    """
    spans = []
    for m in _CARD_CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits):
            spans.append(m.span())
    return spans


def mask_card_numbers(text: str) -> str:
    """Replace every plausible card number by a mask keeping its last four digits."""
    spans = find_card_numbers(text)
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        digits = re.sub(r"[ -]", "", text[start:end])
        out.append(text[last:start])
        out.append("**** **** **** " + digits[-4:])
        last = end
    out.append(text[last:])
    return "".join(out)


#: Reply and forward markers that mail clients put before a subject, folded (see :func:`fold`), in the
#: languages guard supports: Re/Fwd/Fw, AW/WG (de), RV/RE (es, ca), TR (fr), R/I/Rif (it), ENC/RES (pt),
#: Antw/Doorst (nl), Odp/PD (pl), YNT/ILT (tr), SV/VS (sv, fi), 回复/转发/答复 (zh), ΣΧΕΤ/ΠΡΘ (el).
REPLY_PREFIXES = frozenset({"re", "aw", "r", "rif", "res", "antw", "odp", "ynt", "sv", "vs", "回复", "答复", "回覆", "σχετ"})
FORWARD_PREFIXES = frozenset({"fw", "fwd", "wg", "rv", "tr", "i", "enc", "doorst", "pd", "ilt", "转发", "轉寄", "πρθ"})
SUBJECT_PREFIXES = REPLY_PREFIXES | FORWARD_PREFIXES | {"ref"}
_MAX_PREFIX = 8


def _subject_prefixes(subject: str):
    """(marker word, the rest of the subject) for each leading reply/forward marker, outermost first.
    Linear: each step looks at most a few characters ahead for a colon (ASCII or full-width);
    "[2]"-style counters ("Re[2]:") are accepted."""
    s = subject.strip()
    for _ in range(20):  # "Re: Re: Re: ..." chains end; hostile subjects cannot make this loop long
        head = s[: _MAX_PREFIX + 1]
        cut = min((i for i in (head.find(":"), head.find("：")) if i > 0), default=-1)
        if cut < 0:
            return
        word = fold(head[:cut]).split("[", 1)[0].strip()
        if word not in SUBJECT_PREFIXES:
            return
        s = s[cut + 1:].lstrip()
        yield word, s


def strip_subject_prefixes(subject: str) -> tuple[str, bool]:
    """(the subject without its leading reply/forward markers, whether any was removed).

    "RV: Fwd: Hotel" -> ("Hotel", True)."""
    rest = None
    for _, rest in _subject_prefixes(subject):
        pass
    return (subject.strip(), False) if rest is None else (rest, True)


def subject_marker(subject: str) -> str | None:
    """"reply" or "forward" by the outermost marker of the subject ("Fwd: Re: x" is a forward), else None."""
    for word, _ in _subject_prefixes(subject or ""):
        return "reply" if word in REPLY_PREFIXES else "forward" if word in FORWARD_PREFIXES else None
    return None


def own_subject_words(subject: str, forwarded_subject: str | None) -> str:
    """What a forwarder wrote in the subject themselves, folded.

    A forward's subject is the forwarded message's, so on its own it says nothing about the
    forwarder; but people add to it ("Fwd: Deposit required - I paid this, is it you??") or write
    their own ("Genuine?" above an attached message). The forwarded subject is taken out of the
    outer one; a subject with a forward marker and nothing added gives ""."""
    outer, marked = strip_subject_prefixes(subject or "")
    outer = fold(outer)
    inner = fold(strip_subject_prefixes(forwarded_subject or "")[0])
    if inner and inner in outer:
        return " ".join(outer.replace(inner, " ", 1).split()).strip(" -–—:|()[]")
    return "" if marked else outer
