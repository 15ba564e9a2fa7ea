"""The model's features: the ONE place that turns a message into numbers.

Training (``guard train``, ``guard evaluate``) and scoring (``guard.classification.model``)
both call :func:`terms` and :meth:`FeatureSpace.row`, so what the model was
trained on and what it scores cannot drift apart. Nothing here imports
scikit-learn; scipy is only imported by :meth:`FeatureSpace.matrix`, which
training uses.

A message becomes three bags of terms ("blocks"):

``word``  word unigrams and bigrams of the subject and the author's own text
          (``ParsedMessage.text``: forwarded and quoted parts excluded, so a
          participant's report is judged on what the participant wrote), plus
          the subject's words again, prefixed ``s:``;
``char``  character 3-5-grams inside word boundaries (scikit-learn's
          ``char_wb``: each word padded with one space, n-grams never cross
          words) of the first :data:`CHAR_CHARS` characters: robust to
          misspellings, inflection and the languages an events inbox sees;
``meta``  structural header tokens: free-mail or system sender, a domain in the
          display name, Reply-To elsewhere, how a message is embedded, reply
          markers, links by number, IP links and links elsewhere than the
          sender, attachment types, parse defects. Provenance is left out on
          purpose (feature version 2): no sender or link domains, no
          SPF/DKIM/DMARC results, no HTML flag, no language, content type or
          X-Mailer. In a training corpus those name where a message was
          collected, not what it says; authentication is explicit rules that
          trust only the institute's receiving server.

Text is lower-cased, accents are stripped, digits become ``0``, links become
``zzurl`` and addresses ``zzemail``; only the first :data:`TEXT_CHARS`
characters are read, so the cost per message is bounded whatever its size.

Character n-grams are the costly block, so they are computed with numpy: each
n-gram is identified by a 64-bit hash of its code points (:func:`char_codes`;
:func:`char_ngrams` and :func:`char_code` give the same n-grams as strings,
for explanations and tests). Word and meta terms are looked up as strings.

A block's vector is TF-IDF with sublinear term frequency (``1 + ln tf``)
times the block's smoothed idf (``ln((1 + n) / (1 + df)) + 1``),
L2-normalised per block, as scikit-learn's
``TfidfVectorizer(sublinear_tf=True)`` computes it. Each block's vocabulary is
capped (:data:`MAX_FEATURES`) and chosen by document frequency.

Change anything here that alters the terms or the weighting and bump
:data:`FEATURE_VERSION`: a model trained under another version is refused.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from itertools import repeat
from typing import Iterable, Sequence

import numpy as np

from guard.mail.message import ParsedMessage
from guard.mail.textutil import may_hold_link, strip_marks

FEATURE_VERSION = 2

#: characters of subject + own text read for word n-grams
TEXT_CHARS = 5000
#: characters of that text read for character n-grams
CHAR_CHARS = 3000
CHAR_NGRAMS = (3, 5)
MAX_LINK_DOMAINS = 20
BLOCKS = ("word", "char", "meta")
#: vocabulary caps per block
MAX_FEATURES = {"word": 60_000, "char": 150_000, "meta": 5_000}
#: a term must occur in this many training messages to enter the vocabulary
MIN_DF = {"word": 2, "char": 2, "meta": 2}

#: consumer mailbox providers (kept here, not read from the rule files, so a
#: rule-list edit cannot silently change what a trained model sees)
FREEMAIL = frozenset(
    """gmail.com googlemail.com outlook.com hotmail.com hotmail.es hotmail.fr hotmail.co.uk live.com msn.com yahoo.com
    yahoo.es yahoo.fr yahoo.co.uk ymail.com aol.com icloud.com me.com mac.com proton.me protonmail.com pm.me gmx.com
    gmx.net gmx.de web.de mail.com yandex.com yandex.ru mail.ru zoho.com zohomail.com tutanota.com tuta.io qq.com 163.com
    126.com rediffmail.com inbox.com fastmail.com hushmail.com outlook.es outlook.fr libero.it orange.fr laposte.net""".split()
)
_SYSTEM_LOCALS = ("mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply", "bounce", "notification")

_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_WORD = re.compile(r"\b\w\w+\b")
_DIGITS = str.maketrans("123456789", "000000000")
_IP_HOST = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_FWD_SUBJECT = re.compile(r"^\s*(?:fwd?|fw|tr|rv|wg|enc|vs|doorst|i)\s*:", re.I)
_NAME_WITH_DOMAIN = re.compile(r"\w\.(?:com|org|net|info|co|events?)\b")


@dataclass(frozen=True, slots=True)
class Documents:
    """A message's model inputs before tokenising (normalised strings)."""

    text: str  # subject + own text, normalised, at most TEXT_CHARS
    subject: str  # normalised subject
    meta: tuple[str, ...]  # header tokens


@dataclass(frozen=True, slots=True)
class Terms:
    """The bags of terms of one message (repeats count): word and char as uint64 codes, meta as strings."""

    word: np.ndarray  # uint64 codes, see word_codes()
    char: np.ndarray  # uint64 codes, see char_codes()
    meta: list[str]


class _Recent:
    """The last few results of a pure function of one string, keyed by that string (equal strings,
    equal results). The scam model and the intent model read the same words of most messages: the
    intent model's normalised author text, its character n-grams and its word n-grams are then the
    scam model's, computed once. Arrays handed out are read-only (they are shared)."""

    __slots__ = ("size", "items")

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.items: dict[str, object] = {}

    def get(self, key: str):
        return self.items.get(key)

    def put(self, key: str, value):
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
        items = self.items
        if len(items) >= self.size:
            try:
                del items[next(iter(items))]
            except (KeyError, RuntimeError, StopIteration):  # another thread evicted it first
                pass
        items[key] = value
        return value


_NORMALISED = _Recent()
_CHAR_CODES = _Recent()
_TEXT_WORD_CODES = _Recent()


def normalise(text: str) -> str:
    """Lower-case, accents stripped, links/addresses/digits replaced."""
    found = _NORMALISED.get(text)
    return found if found is not None else _NORMALISED.put(text, _normalise(text))


def _normalise(text: str) -> str:
    """:func:`normalise` itself (:func:`_normalise_reference` is the plain definition). Each
    message's text goes through it, so it skips what cannot apply: the link pattern
    (:func:`~guard.mail.textutil.may_hold_link`), the address pattern without an "@";
    digits and combining marks in non-ASCII text are replaced with ``str.replace`` per distinct
    character (``str.translate`` looks every character up in a dictionary once the text is not ASCII)."""
    if may_hold_link(text):
        text = _URL.sub(" zzurl ", text)
    if "@" in text:
        text = _EMAIL.sub(" zzemail ", text)
    text = text.lower()
    if text.isascii():
        return text.translate(_DIGITS)
    for digit in "123456789":  # before NFKD, as in the reference: "²" stays "2"
        if digit in text:
            text = text.replace(digit, "0")
    decomposed = unicodedata.normalize("NFKD", text)
    if decomposed != text:
        text = strip_marks(decomposed)
    return text


def _normalise_reference(text: str) -> str:
    """:func:`_normalise` written the plain way (the reference its tests compare with)."""
    text = _URL.sub(" zzurl ", text)
    text = _EMAIL.sub(" zzemail ", text)
    text = text.lower().translate(_DIGITS)
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        if decomposed != text:
            text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return text


def documents(msg: ParsedMessage) -> Documents:
    subject = msg.subject[:500]
    if msg.forwarded and _FWD_SUBJECT.match(subject):
        # a forward's subject is the forwarded message's (scored on its own as the inner message):
        # a participant's report must be judged on what the participant wrote
        subject = ""
    text = normalise((subject + "\n" + msg.text)[:TEXT_CHARS])
    return Documents(text=text, subject=normalise(subject), meta=tuple(meta_tokens(msg)))


def _bucket(n: int) -> str:
    return "0" if n == 0 else "1" if n == 1 else "2-5" if n <= 5 else "6+"


def meta_tokens(msg: ParsedMessage) -> list[str]:
    """Header tokens (see the module docstring). Order does not matter."""
    out: list[str] = []
    f = msg.from_
    from_reg = f.registrable if f and f.domain else ""
    if from_reg in FREEMAIL:
        out.append("from:freemail")
    if f is not None:
        if any(s in f.local for s in _SYSTEM_LOCALS):
            out.append("from:system")
        if f.name and _NAME_WITH_DOMAIN.search(f.name.lower()):
            out.append("fromname:domain")
    if msg.reply_to:
        regs = {a.registrable for a in msg.reply_to if a.domain}
        out.append("replyto:differs" if regs and regs != {from_reg} else "replyto:same")
        if regs & FREEMAIL:
            out.append("replyto:freemail")
    else:
        out.append("replyto:none")
    out.append(f"fwd:{msg.forward_style or 'other'}" if msg.forwarded else "fwd:none")
    if msg.in_reply_to or msg.references:
        out.append("thread:reply")
    subj = msg.subject.lower().lstrip()
    if subj.startswith(("re:", "aw:", "r:")):
        out.append("subject:re")
    elif subj.startswith(("fw:", "fwd:", "tr:", "rv:", "wg:")):
        out.append("subject:fwd")
    if not msg.to:
        out.append("to:none")
    regs: list[str] = []
    for u in msg.urls:
        if u.registrable and u.registrable not in regs:
            regs.append(u.registrable)
        if _IP_HOST.match(u.host):
            out.append("link:ip")
    out.append(f"links:{_bucket(len(regs))}")
    if from_reg and regs and from_reg not in regs:
        out.append("link:elsewhere")
    for att in msg.attachments[:10]:
        ext = att.filename.rpartition(".")[2].lower()[:8] if "." in att.filename else "none"
        out.append(f"att:{ext}")
    out.append(f"atts:{_bucket(len(msg.attachments))}")
    if msg.defects:
        out.append("defects")
    return out


# -- character n-grams as 64-bit codes --------------------------------------------------------

_M64 = (1 << 64) - 1
_P = 0x100000001B3  # multiplier of the polynomial hash over code points
_SALT = 0x9E3779B97F4A7C15  # times n, so n-grams of different lengths differ
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64 finaliser


def _char_text(docs_text: str) -> str:
    """The padded text char n-grams are taken from: words joined by single spaces, one space each side."""
    return " " + " ".join(docs_text[:CHAR_CHARS].split()) + " "


def _char_windows(s: str) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
    """For each n: (n, valid window starts, their salted hashes) over the padded text ``s``. The
    codes are the hashes mixed (:func:`_window_codes`): mixing is element by element, so it is done
    once on all n's hashes together instead of once per n."""
    c = np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
    n_c = len(c)
    lo, hi = CHAR_NGRAMS
    out: list[tuple[int, np.ndarray, np.ndarray]] = []
    if n_c < lo:
        return c, out
    space = np.concatenate(([0], np.cumsum(c == 32)))  # space[k] = spaces in s[:k]
    p = np.uint64(_P)
    h = c[: n_c - lo + 1].copy()
    for k in range(1, lo):
        h = h * p + c[k : n_c - lo + 1 + k]
    for n in range(lo, hi + 1):
        if n > lo:
            if n_c < n:
                break
            h = h[:-1] * p + c[n - 1 :]
        # a window is an n-gram of one padded word when no space lies strictly inside it: for the
        # window starting at i, space[i + n - 1] - space[i + 1] == 0 (as slices: no index arrays)
        ok = space[n - 1 : n_c] == space[1 : n_c - n + 2]
        out.append((n, np.flatnonzero(ok), h[ok] + np.uint64((_SALT * n) & _M64)))
    return c, out


def _window_codes(windows: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """The codes of :func:`_char_windows`' windows, n by n in its order."""
    if not windows:
        return np.empty(0, dtype=np.uint64)
    return _mix(np.concatenate([hashes for _, _, hashes in windows]))


def char_codes(docs_text: str) -> np.ndarray:
    """Codes of all char_wb n-grams (with repeats) of a normalised text, as uint64 (read-only:
    the last few are kept, keyed by the :data:`CHAR_CHARS` characters they are taken from)."""
    key = docs_text[:CHAR_CHARS]
    found = _CHAR_CODES.get(key)
    return found if found is not None else _CHAR_CODES.put(key, _char_codes(key))


def _char_codes(docs_text: str) -> np.ndarray:
    _, windows = _char_windows(_char_text(docs_text))
    return _window_codes(windows)


def char_ngrams_with_codes(docs_text: str) -> tuple[list[str], np.ndarray]:
    """The n-grams of :func:`char_codes` as strings, in the same order as their codes (explanations, tests)."""
    s = _char_text(docs_text)
    _, windows = _char_windows(s)
    grams = [s[i : i + n] for n, starts, _ in windows for i in starts.tolist()]
    return grams, _window_codes(windows)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def char_code(gram: str) -> int:
    """The code :func:`char_codes` gives the n-gram ``gram`` (pure Python; tests and explanations)."""
    return _mix1((_poly(gram) + _SALT * len(gram)) & _M64)


def char_ngrams(docs_text: str) -> list[str]:
    """scikit-learn's ``char_wb`` n-grams of the text, computed the plain way (reference for tests)."""
    lo, hi = CHAR_NGRAMS
    out: list[str] = []
    for w in _char_text(docs_text).split():
        w = f" {w} "
        n_w = len(w)
        for n in range(lo, min(hi, n_w) + 1):
            out.extend(w[i : i + n] for i in range(n_w - n + 1))
    return out


# -- word unigrams, bigrams and subject words as 64-bit codes ---------------------------------

_Q = pow(_P, -1, 1 << 64)  # inverse of _P modulo 2**64 (_P is odd)
_SALT_WORD = 0xD6E8FEB86659FD93
_SALT_SUBJECT = 0xA0761D6478BD642F
_SALT_BIGRAM = 0xE7037ED1A0B428DB
#: 1 for the ASCII word characters, by code point; entry 128 stands for every non-ASCII one
#: (:func:`_word_spans` classifies those itself)
_ASCII_WORD = np.zeros(129, dtype=np.int8)
for _ch in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_":
    _ASCII_WORD[ord(_ch)] = True
_POWERS: list[np.ndarray] = []


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**j and Q**j (mod 2**64) for j < n, grown on demand."""
    if not _POWERS or len(_POWERS[0]) < n:
        size = max(n, 8192)
        p = np.full(size, _P, dtype=np.uint64)
        p[0] = 1
        q = np.full(size, _Q, dtype=np.uint64)
        q[0] = 1
        _POWERS[:] = [np.cumprod(p), np.cumprod(q)]
    return _POWERS[0], _POWERS[1]


def _codepoints(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)


def _word_spans(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the runs of 2+ word characters (what ``\\b\\w\\w+\\b`` finds)."""
    isw = _ASCII_WORD[np.minimum(c, 128).astype(np.intp)]
    other = np.flatnonzero(c >= 128)
    if len(other):  # ``str.isalnum`` once per distinct character, not per character
        distinct, where = np.unique(c[other], return_inverse=True)
        isw[other] = np.array([chr(x).isalnum() for x in distinct.tolist()], dtype=np.int8)[where]
    padded = np.concatenate(([0], isw, [0]))
    d = padded[1:] - padded[:-1]
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    keep = ends - starts >= 2
    return starts[keep], ends[keep]


def _span_codes(c: np.ndarray, starts: np.ndarray, ends: np.ndarray, salt: int) -> np.ndarray:
    """Codes of the substrings [start, end): the polynomial hash of their code points (as :func:`_poly`), salted, mixed."""
    if len(starts) == 0:
        return np.empty(0, dtype=np.uint64)
    ppow, qpow = _powers(len(c) + 1)
    g = np.zeros(len(c) + 1, dtype=np.uint64)
    np.cumsum(c * qpow[: len(c)], out=g[1:])
    raw = ppow[ends - 1] * (g[ends] - g[starts])
    return _mix(raw + np.uint64(salt) * (ends - starts).astype(np.uint64))


def word_codes(docs: Documents) -> np.ndarray:
    """Codes of the word unigrams and bigrams of the text and of the subject's words (with repeats)."""
    text = _TEXT_WORD_CODES.get(docs.text)
    if text is None:
        text = _TEXT_WORD_CODES.put(docs.text, _text_word_codes(docs.text))
    if not docs.subject:
        return text.copy()
    cs = _codepoints(docs.subject)
    subj = _span_codes(cs, *_word_spans(cs), _SALT_SUBJECT)
    return np.concatenate((text, subj))


def _text_word_codes(text: str) -> np.ndarray:
    """The unigram codes, then the bigram codes, of a normalised text."""
    c = _codepoints(text)
    uni = _span_codes(c, *_word_spans(c), _SALT_WORD)
    bi = _mix(uni[:-1] * np.uint64(_P) + uni[1:] + np.uint64(_SALT_BIGRAM)) if len(uni) > 1 else np.empty(0, dtype=np.uint64)
    return np.concatenate((uni, bi))


def word_terms_with_codes(docs: Documents) -> tuple[list[str], np.ndarray]:
    """The terms of :func:`word_codes` as strings ("a", "a b", "s:a"), in the same order as their codes."""
    tokens = _WORD.findall(docs.text)
    out = tokens[:]
    out.extend(f"{a} {b}" for a, b in zip(tokens, tokens[1:]))
    out.extend("s:" + t for t in _WORD.findall(docs.subject))
    return out, word_codes(docs)


def _poly(s: str) -> int:
    h = 0
    for ch in s:
        h = (h * _P + ord(ch)) & _M64
    return h


def _mix1(z: int) -> int:
    z = ((z ^ (z >> 30)) * _MIX1) & _M64
    z = ((z ^ (z >> 27)) * _MIX2) & _M64
    return z ^ (z >> 31)


def word_code(term: str) -> int:
    """The code :func:`word_codes` gives a term: "word", "word word" (bigram) or "s:word" (pure Python)."""
    if term.startswith("s:"):
        t = term[2:]
        return _mix1((_poly(t) + _SALT_SUBJECT * len(t)) & _M64)
    if " " in term:
        a, b = term.split(" ", 1)
        return _mix1((word_code(a) * _P + word_code(b) + _SALT_BIGRAM) & _M64)
    return _mix1((_poly(term) + _SALT_WORD * len(term)) & _M64)


def terms_of(docs: Documents) -> Terms:
    return Terms(word=word_codes(docs), char=char_codes(docs.text), meta=list(docs.meta))


def terms(msg: ParsedMessage) -> Terms:
    return terms_of(documents(msg))


# -- vocabularies and weighting -------------------------------------------------------------


def counted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values, sorted, and how often each occurs: ``np.unique(values,
    return_counts=True)`` by the same steps (sort, mark where a new value starts, the lengths of
    the runs), without its argument handling, which costs as much as the work on a message's few
    thousand codes. The scam model's code blocks and the intent model's hashed blocks use it."""
    ordered = np.sort(values, axis=None)
    if not len(ordered):
        return ordered, np.empty(0, dtype=np.intp)
    starts = np.empty(len(ordered), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    first = np.flatnonzero(starts)
    ends = np.empty_like(first)  # where each run ends: the next run's start (np.diff: 5 times as slow)
    ends[:-1] = first[1:]
    ends[-1] = len(ordered)
    return ordered[first], ends - first


def _idf(dfs: np.ndarray, n_docs: int) -> np.ndarray:
    return np.log((1.0 + n_docs) / (1.0 + dfs.astype(np.float64))) + 1.0


def _weights(tfs: np.ndarray, idf: np.ndarray) -> np.ndarray:
    vals = (1.0 + np.log(tfs)) * idf
    norm = math.sqrt(float(vals @ vals))
    return vals / norm if norm > 0 else vals


_EMPTY = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))


@dataclass
class StringBlock:
    """A vocabulary of string terms (word, meta); column i is ``terms[i]``."""

    name: str
    terms: list[str]
    idf: np.ndarray
    index: dict[str, int]

    @classmethod
    def create(cls, name: str, terms_: Sequence[str], idf) -> "StringBlock":
        terms_ = list(terms_)
        return cls(name, terms_, np.asarray(idf, dtype=np.float64), {t: i for i, t in enumerate(terms_)})

    @classmethod
    def fit(cls, name: str, bags: Iterable[list[str]], *, max_features: int, min_df: int) -> "StringBlock":
        dfs: Counter = Counter()
        n = 0
        for bag in bags:
            n += 1
            dfs.update(set(bag))
        kept = sorted(((df, t) for t, df in dfs.items() if df >= min_df), key=lambda x: (-x[0], x[1]))[:max_features]
        kept.sort(key=lambda x: x[1])
        return cls.create(name, [t for _, t in kept], _idf(np.array([df for df, _ in kept], dtype=np.int64), n))

    def __len__(self) -> int:
        return len(self.terms)

    def row(self, bag: list[str]) -> tuple[np.ndarray, np.ndarray]:
        counts = Counter(bag)
        if not counts:
            return _EMPTY
        cols = np.fromiter(map(self.index.get, counts, repeat(-1)), dtype=np.int64, count=len(counts))
        tfs = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        known = cols >= 0
        cols, tfs = cols[known], tfs[known]
        order = np.argsort(cols, kind="stable")
        cols = cols[order]
        return cols, _weights(tfs[order], self.idf[cols])

    def names(self) -> list[str]:
        return self.terms


@dataclass
class CodeBlock:
    """A vocabulary of char n-gram codes, sorted; column i is ``codes[i]``."""

    name: str
    codes: np.ndarray  # uint64, strictly increasing
    idf: np.ndarray

    @classmethod
    def fit(cls, name: str, bags: Iterable[np.ndarray], *, max_features: int, min_df: int) -> "CodeBlock":
        uniq = [np.unique(b) for b in bags]
        n = len(uniq)
        allc = np.concatenate(uniq) if uniq else np.empty(0, dtype=np.uint64)
        codes, dfs = np.unique(allc, return_counts=True)
        keep = dfs >= min_df
        codes, dfs = codes[keep], dfs[keep]
        if len(codes) > max_features:
            # most frequent first; ties broken by code, so the choice is deterministic
            order = np.lexsort((codes, -dfs))[:max_features]
            order.sort()
            codes, dfs = codes[order], dfs[order]
        return cls(name, codes, _idf(dfs, n))

    def __len__(self) -> int:
        return len(self.codes)

    def row(self, bag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(bag) == 0 or len(self.codes) == 0:
            return _EMPTY
        uniq, tfs = counted(bag)
        pos = np.searchsorted(self.codes, uniq)
        pos[pos == len(self.codes)] = 0
        hit = self.codes[pos] == uniq
        cols = pos[hit].astype(np.int64)
        return cols, _weights(tfs[hit].astype(np.float64), self.idf[cols])

    def names(self) -> list[str]:
        return [f"#{c:016x}" for c in self.codes.tolist()]


Block = StringBlock | CodeBlock


@dataclass
class FeatureSpace:
    """The fitted blocks side by side: one sparse row per message."""

    blocks: list[Block]

    @classmethod
    def fit(cls, all_terms: Sequence[Terms], max_features: dict[str, int] | None = None, min_df: dict[str, int] | None = None) -> "FeatureSpace":
        mf = {**MAX_FEATURES, **(max_features or {})}
        md = {**MIN_DF, **(min_df or {})}
        blocks: list[Block] = [
            CodeBlock.fit("word", [t.word for t in all_terms], max_features=mf["word"], min_df=md["word"]),
            CodeBlock.fit("char", [t.char for t in all_terms], max_features=mf["char"], min_df=md["char"]),
            StringBlock.fit("meta", (t.meta for t in all_terms), max_features=mf["meta"], min_df=md["meta"]),
        ]
        return cls(blocks)

    @property
    def n_columns(self) -> int:
        return sum(len(b) for b in self.blocks)

    def offsets(self) -> dict[str, int]:
        out, off = {}, 0
        for b in self.blocks:
            out[b.name] = off
            off += len(b)
        return out

    def row(self, t: Terms) -> tuple[np.ndarray, np.ndarray]:
        """One message's (columns, values); the single weighting used by training and scoring."""
        cols, vals = [], []
        offset = 0
        for b in self.blocks:
            c, v = b.row(getattr(t, b.name))
            cols.append(c + offset)
            vals.append(v)
            offset += len(b)
        return np.concatenate(cols), np.concatenate(vals)

    def matrix(self, all_terms: Iterable[Terms]):
        """A scipy CSR matrix of many messages' rows (training and evaluation)."""
        from scipy.sparse import csr_matrix  # noqa: PLC0415 - only training needs scipy

        indptr = [0]
        cols, vals = [], []
        for t in all_terms:
            c, v = self.row(t)
            cols.append(c)
            vals.append(v)
            indptr.append(indptr[-1] + len(c))
        data = np.concatenate(vals) if vals else np.empty(0)
        indices = np.concatenate(cols) if cols else np.empty(0, dtype=np.int64)
        return csr_matrix((data, indices, np.array(indptr, dtype=np.int64)), shape=(len(indptr) - 1, self.n_columns))

    def feature_names(self) -> list[str]:
        return [f"{b.name}:{n}" for b in self.blocks for n in b.names()]

    def explain_terms(self, t: Terms, docs: Documents) -> dict[int, str]:
        """Column -> readable term for the columns a message uses (char codes mapped back to their n-grams)."""
        off = self.offsets()
        out: dict[int, str] = {}
        for b in self.blocks:
            if isinstance(b, StringBlock):
                for term in set(getattr(t, b.name)):
                    j = b.index.get(term)
                    if j is not None:
                        out[off[b.name] + j] = f"{b.name}:{term}"
            elif len(b.codes):
                grams, codes = char_ngrams_with_codes(docs.text) if b.name == "char" else word_terms_with_codes(docs)
                pos = np.searchsorted(b.codes, codes)
                pos[pos == len(b.codes)] = 0
                hit = b.codes[pos] == codes
                for gram, j, h in zip(grams, pos.tolist(), hit.tolist()):
                    if h:
                        out[off[b.name] + j] = f"{b.name}:{gram!r}" if b.name == "char" else f"{b.name}:{gram}"
        return out
