"""The model's features: the ONE place that turns a message into numbers.

Training (``guard train``, ``guard evaluate``) and scoring (``guard.model``)
both call :func:`terms` and :func:`row`, so what the model was trained on and
what it scores cannot drift apart. Nothing here imports scikit-learn; scipy is
only imported by :func:`matrix`, which training uses.

A message becomes three bags of terms ("blocks"):

``word``  word unigrams and bigrams of the subject and the author's own text
          (``ParsedMessage.text``: forwarded and quoted parts excluded, so a
          participant's report is judged on what the participant wrote), plus
          the subject's words again, prefixed ``s:``;
``char``  character 3-5-grams inside word boundaries (like scikit-learn's
          ``char_wb``) of the first :data:`CHAR_CHARS` characters: robust to
          misspellings, inflection and the languages an events inbox sees;
``meta``  header tokens: the sender's registrable domain, free-mail sender,
          Reply-To elsewhere, SPF/DKIM/DMARC results, forwarded message,
          language, content type, X-Mailer present, link domains, attachment
          types, reply markers.

Text is lower-cased, accents are stripped, digits become ``0``, links become
``zzurl`` and addresses ``zzemail``; only the first :data:`TEXT_CHARS`
characters are read (bounded cost per message, whatever its size).

A block's vector is TF-IDF with sublinear term frequency (``1 + ln tf``)
times the block's idf, L2-normalised per block (as scikit-learn's
``TfidfVectorizer(sublinear_tf=True)`` computes it). The vocabulary of each
block is capped (:data:`MAX_FEATURES`), chosen by document frequency.

Change anything here that alters the terms or the weighting and bump
:data:`FEATURE_VERSION`: a model trained with another version is refused.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .message import ParsedMessage

FEATURE_VERSION = 1

#: characters of subject + own text read for word n-grams
TEXT_CHARS = 5000
#: characters read for character n-grams (the costliest block)
CHAR_CHARS = 2000
CHAR_NGRAMS = (3, 5)
WORD_NGRAMS = (1, 2)
MAX_LINK_DOMAINS = 20
BLOCKS = ("word", "char", "meta")
#: vocabulary caps per block
MAX_FEATURES = {"word": 60_000, "char": 120_000, "meta": 5_000}
#: a term must be seen in this many training messages to enter the vocabulary
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


@dataclass(frozen=True, slots=True)
class Documents:
    """A message's model inputs before tokenising (normalised strings)."""

    text: str  # subject + own text, normalised, at most TEXT_CHARS
    subject: str  # normalised subject
    meta: tuple[str, ...]  # header tokens


@dataclass(frozen=True, slots=True)
class Terms:
    """The bags of terms of one message, one list per block (repeats count)."""

    word: list[str]
    char: list[str]
    meta: list[str]

    def block(self, name: str) -> list[str]:
        return getattr(self, name)


def normalise(text: str) -> str:
    """Lower-case, accents stripped, links/addresses/digits replaced."""
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
    text = normalise((subject + "\n" + msg.text)[:TEXT_CHARS])
    return Documents(text=text, subject=normalise(subject), meta=tuple(meta_tokens(msg)))


def _bucket(n: int) -> str:
    return "0" if n == 0 else "1" if n == 1 else "2-5" if n <= 5 else "6+"


def meta_tokens(msg: ParsedMessage) -> list[str]:
    """Header tokens (see the module docstring). Order does not matter."""
    out: list[str] = []
    f = msg.from_
    from_reg = f.registrable if f and f.domain else ""
    out.append(f"from:{from_reg or 'none'}")
    if from_reg in FREEMAIL:
        out.append("from:freemail")
    if f is not None:
        local = f.local
        if any(s in local for s in _SYSTEM_LOCALS):
            out.append("from:system")
        if f.name and re.search(r"\w\.(?:com|org|net|info|co|events?)\b", f.name.lower()):
            out.append("fromname:domain")
    if msg.reply_to:
        regs = {a.registrable for a in msg.reply_to if a.domain}
        out.append("replyto:differs" if regs and regs != {from_reg} else "replyto:same")
        if regs & FREEMAIL:
            out.append("replyto:freemail")
    else:
        out.append("replyto:none")
    a = msg.auth
    for name, value in (("spf", a.spf), ("dkim", a.dkim), ("dmarc", a.dmarc)):
        out.append(f"{name}:{value or 'absent'}")
    out.append(f"fwd:{msg.forward_style or 'none'}" if msg.forwarded else "fwd:none")
    out.append(f"lang:{msg.language}")
    out.append(f"ct:{msg.content_type}")
    if msg.html_seen:
        out.append("html")
    out.append("xmailer:yes" if msg.header("X-Mailer") else "xmailer:no")
    if msg.in_reply_to or msg.references:
        out.append("thread:reply")
    subj = msg.subject.lower().lstrip()
    if subj.startswith(("re:", "aw:", "r:")):
        out.append("subject:re")
    elif subj.startswith(("fw:", "fwd:", "tr:", "rv:")):
        out.append("subject:fwd")
    if not msg.to:
        out.append("to:none")
    regs = []
    for u in msg.urls:
        if u.registrable and u.registrable not in regs:
            regs.append(u.registrable)
        if _IP_HOST.match(u.host):
            out.append("link:ip")
    for r in regs[:MAX_LINK_DOMAINS]:
        out.append(f"link:{r}")
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


def word_ngrams(text: str) -> list[str]:
    tokens = _WORD.findall(text)
    out = tokens[:]
    out.extend([f"{a} {b}" for a, b in zip(tokens, tokens[1:])])
    return out


def char_ngrams(text: str) -> list[str]:
    """Character n-grams inside word boundaries, each word padded with spaces."""
    lo, hi = CHAR_NGRAMS
    out: list[str] = []
    ext = out.extend
    for w in text.split():
        w = f" {w} "
        n_w = len(w)
        if n_w <= lo:
            out.append(w)
            continue
        for n in range(lo, min(hi, n_w) + 1):
            ext([w[i : i + n] for i in range(n_w - n + 1)])
    return out


def terms(msg: ParsedMessage) -> Terms:
    return terms_of(documents(msg))


def terms_of(docs: Documents) -> Terms:
    word = word_ngrams(docs.text)
    word.extend("s:" + t for t in _WORD.findall(docs.subject))
    return Terms(word=word, char=char_ngrams(docs.text[:CHAR_CHARS]), meta=list(docs.meta))


# -- vocabulary and weighting ---------------------------------------------------------------


@dataclass
class Block:
    """One block's fitted vocabulary and idf (terms[i] has column i)."""

    name: str
    terms: list[str]
    idf: np.ndarray  # float64, one per term
    index: dict[str, int]

    @classmethod
    def create(cls, name: str, terms_: Sequence[str], idf: np.ndarray) -> "Block":
        terms_ = list(terms_)
        return cls(name, terms_, np.asarray(idf, dtype=np.float64), {t: i for i, t in enumerate(terms_)})

    def __len__(self) -> int:
        return len(self.terms)


def fit_block(name: str, doc_freq: Counter, n_docs: int, *, max_features: int | None = None, min_df: int | None = None) -> Block:
    """Vocabulary = the ``max_features`` terms in most documents (ties by term), idf smoothed as scikit-learn does."""
    max_features = MAX_FEATURES[name] if max_features is None else max_features
    min_df = MIN_DF[name] if min_df is None else min_df
    kept = [(df, t) for t, df in doc_freq.items() if df >= min_df]
    kept.sort(key=lambda x: (-x[0], x[1]))
    kept = kept[:max_features]
    kept.sort(key=lambda x: x[1])  # columns in term order: deterministic
    dfs = np.array([df for df, _ in kept], dtype=np.float64)
    idf = np.log((1.0 + n_docs) / (1.0 + dfs)) + 1.0
    return Block.create(name, [t for _, t in kept], idf)


def row(block: Block, bag: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Column indices (sorted) and L2-normalised sublinear TF-IDF values of one bag of terms."""
    counts = Counter(bag)
    index = block.index
    cols = []
    tfs = []
    for t, c in counts.items():
        j = index.get(t)
        if j is not None:
            cols.append(j)
            tfs.append(c)
    if not cols:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64)
    cols_a = np.array(cols, dtype=np.int32)
    order = np.argsort(cols_a, kind="stable")
    cols_a = cols_a[order]
    vals = (1.0 + np.log(np.array(tfs, dtype=np.float64)[order])) * block.idf[cols_a]
    norm = math.sqrt(float(vals @ vals))
    if norm > 0:
        vals /= norm
    return cols_a, vals


def document_frequencies(all_terms: Iterable[Terms]) -> tuple[dict[str, Counter], int]:
    dfs = {b: Counter() for b in BLOCKS}
    n = 0
    for t in all_terms:
        n += 1
        for b in BLOCKS:
            dfs[b].update(set(t.block(b)))
    return dfs, n


def fit_blocks(all_terms: Sequence[Terms], **caps) -> list[Block]:
    dfs, n = document_frequencies(all_terms)
    return [fit_block(b, dfs[b], n, **caps.get(b, {})) for b in BLOCKS]


def sparse_rows(blocks: Sequence[Block], t: Terms) -> tuple[np.ndarray, np.ndarray]:
    """One message's row over all blocks side by side (block columns offset)."""
    cols, vals = [], []
    offset = 0
    for blk in blocks:
        c, v = row(blk, t.block(blk.name))
        cols.append(c + offset)
        vals.append(v)
        offset += len(blk)
    return np.concatenate(cols), np.concatenate(vals)


def n_columns(blocks: Sequence[Block]) -> int:
    return sum(len(b) for b in blocks)


def matrix(blocks: Sequence[Block], all_terms: Iterable[Terms]):
    """A scipy CSR matrix of many messages' rows (training and evaluation)."""
    from scipy.sparse import csr_matrix  # noqa: PLC0415 - only training needs scipy

    indptr = [0]
    cols, vals = [], []
    for t in all_terms:
        c, v = sparse_rows(blocks, t)
        cols.append(c)
        vals.append(v)
        indptr.append(indptr[-1] + len(c))
    data = np.concatenate(vals) if vals else np.empty(0)
    indices = np.concatenate(cols) if cols else np.empty(0, dtype=np.int32)
    return csr_matrix((data, indices, np.array(indptr, dtype=np.int64)), shape=(len(indptr) - 1, n_columns(blocks)))


def feature_names(blocks: Sequence[Block]) -> list[str]:
    return [f"{b.name}:{t}" for b in blocks for t in b.terms]
