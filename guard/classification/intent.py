"""The author's intent: a learned multi-class model over the writer's own text and the structure.

What did the person who wrote this message (not the message they forward or quote) mean?

====================  ======================================================================
 ``doubt``            reports doubt about, or harm from, a message they received (a report)
 ``paid``             a report whose writer already paid or gave card, bank or passport details
 ``ask``              asks the events office for something (an inquiry)
 ``inform``           informs, thanks, confirms: needs no answer (other)
 ``scam``             is itself a scam
 ``automated``        no person wrote it for this conversation
====================  ======================================================================

Features: character 3-5-grams inside word boundaries and word 1-2-grams of the author's own text
(the scam model's n-gram codes; multilingual by construction, hashed, so the artefact holds no vocabulary of anyone's mail), and
a few dense facts from the earlier stages: whether a third-party message is embedded and how it
was found, what the rules and the scam model said about the outer and the embedded message.
Provenance is left out on purpose (no sender or link domains, no Authentication-Results, no
HTML flag): those are explicit rules, not n-gram weights.

The public spam corpus never reaches this model: it is trained on the project's own labelled
examples only (``models/corpus``), and the artefact is plain numpy arrays (``.npz``, loaded with
``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from guard.classification import author_cues
from guard.errors import ModelError
from guard.mail.textutil import own_subject_words, subject_marker

if TYPE_CHECKING:  # pragma: no cover
    from guard.classification.verdict import Verdict
    from guard.mail.message import ParsedMessage

INTENTS = ("doubt", "paid", "ask", "inform", "scam", "automated")
ARTEFACT_NAME = "guard-intent.npz"
METADATA_NAME = "guard-intent.json"
FORMAT = "guard-intent/4"
CHAR_FEATURES = 2**16
WORD_FEATURES = 2**15
assert all(w & (w - 1) == 0 and w <= 2**16 for w in (CHAR_FEATURES, WORD_FEATURES)), "_block takes low bits as uint16"
MAX_AUTHOR_CHARS = 3000
DENSE_NAMES = (
    "embedded", "embedded_attached", "quoted", "inner_scam", "inner_suspicious", "inner_score",
    "inner_model_p", "outer_scam_score", "outer_report_score", "outer_paid_score", "outer_inquiry_score",
    "outer_automated_score", "outer_model_p", "author_chars", "question", "own_links",
    "reply_subject", "forward_subject", "in_thread", "inner_official", "inner_same_sender",
    "inner_to_sender", "inner_from_recipient",
    *author_cues.NAMES,
)

#: the rule whose hit on an embedded message says its sender is the institute's own (rules/10_sender.toml)
INNER_OFFICIAL_RULE = "OFFICIAL_SENDER"


def intent_of_label(category: str, paid: str) -> str:
    """The intent class of an own example's labels (labels.tsv: category, paid)."""
    if category == "report":
        return "paid" if paid == "yes" else "doubt"
    return {"inquiry": "ask", "other": "inform", "scam": "scam", "automated": "automated"}[category]


def author_text(msg: "ParsedMessage") -> str:
    """The writer's own words. A forward's subject is the forwarded message's; only what the
    forwarder added to it (or wrote instead of it) is theirs (:func:`guard.mail.textutil.own_subject_words`)."""
    if msg.forwarded and msg.forward_style != "quoted":
        subject = own_subject_words(msg.subject, msg.forwarded[0].subject)
    else:
        subject = msg.subject
    return (subject + "\n" + msg.text)[:MAX_AUTHOR_CHARS]


def dense_features(msg: "ParsedMessage", outer: dict[str, float], outer_model_p: float | None,
                   inner: "Verdict | None") -> np.ndarray:
    """The structural facts, scaled to about [0, 1] (names: :data:`DENSE_NAMES`).

    Besides what is embedded and how the rules and the scam model read it, how the message sits in
    a conversation: a reply (subject marker, In-Reply-To / References) that quotes the institute's
    own earlier mail (the embedded message's sender an official address, by the rules) is a
    conversation with the office, not a third party's message; a forward marker is the opposite;
    an embedded message from the very address that sends this one is the sender's own earlier mail
    (a follow-up: "I write again, see my message below"), not somebody else's. An embedded message
    sent *to* this sender is one they received (what a report forwards); one sent *by* this
    message's recipient is the recipient's own mail quoted back to them (a thread with the office,
    or a fraudster's fake history of one).
    All of these are the sender's to write; they weigh only as learned evidence, never alone."""
    embedded = bool(msg.forwarded) and msg.forward_style != "quoted"
    marker = subject_marker(msg.subject)
    clip = lambda v: max(-1.0, min(1.0, v / 10.0))  # noqa: E731
    own = msg.text
    return np.array([
        float(embedded),
        float(msg.forward_style == "rfc822"),
        float(msg.forward_style == "quoted"),
        float(inner is not None and inner.category == "scam"),
        float(inner is not None and inner.category == "suspicious"),
        clip(inner.score) if inner is not None else 0.0,
        (inner.model_p or 0.0) if inner is not None else 0.0,
        clip(outer.get("scam", 0.0)),
        clip(outer.get("report", 0.0)),
        clip(outer.get("paid", 0.0)),
        clip(outer.get("inquiry", 0.0)),
        clip(outer.get("automated", 0.0)),
        outer_model_p or 0.0,
        min(1.0, math.log1p(len(own)) / 8.0),
        float("?" in own or "¿" in own or "？" in own),
        min(1.0, sum(1 for u in msg.urls) / 5.0),
        float(marker == "reply"),
        float(marker == "forward"),
        float(bool(msg.in_reply_to or msg.references)),
        float(inner is not None and any(r.rule == INNER_OFFICIAL_RULE for r in inner.reasons)),
        *map(float, _embedded_parties(msg)),
        *author_cues.features(author_text(msg)),
    ], dtype=np.float64)


def _embedded_parties(msg: "ParsedMessage") -> tuple[bool, bool, bool]:
    """Whether an embedded message was sent by this sender, to this sender, by this message's recipient."""
    sender = msg.from_.addr if msg.from_ is not None else ""
    recipients = {a.addr for a in (*msg.to, *msg.cc)} - {""}
    senders = {m.from_.addr for m in msg.forwarded if m.from_ is not None}
    return (bool(sender) and sender in senders,
            bool(sender) and any(sender in {a.addr for a in (*m.to, *m.cc)} for m in msg.forwarded),
            bool(senders & recipients))


def _block(codes: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashed bag of n-gram codes: columns (``code % width``) and sublinear, L2-normalised term
    frequencies. The widths are powers of two up to 2**16, so the columns are the codes' low bits,
    counted as uint16 (sorting them is quicker than sorting int64)."""
    if not len(codes):
        return np.empty(0, dtype=np.int64), np.empty(0)
    from guard.classification.features import counted  # noqa: PLC0415

    idx, counts = counted((codes & np.uint64(width - 1)).astype(np.uint16))
    vals = 1.0 + np.log(counts)
    # the L2 norm as np.linalg.norm computes it for a vector (sqrt of vals.dot(vals)), without its wrapper
    return idx.astype(np.int64), vals / math.sqrt(vals.dot(vals))


def row(text: str, dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One message's sparse row (columns, values): hashed character n-grams | hashed words | dense facts.

    The n-gram codes are the scam model's own (:func:`guard.classification.features.char_codes`
    and :func:`~guard.classification.features.word_codes`, over the same normalised text), folded
    into a fixed number of columns, so no vocabulary is stored and scoring needs numpy only."""
    from guard.classification import features  # noqa: PLC0415

    norm = features.normalise(text)
    ci, cv = _block(features.char_codes(norm), CHAR_FEATURES)
    wi, wv = _block(features.word_codes(features.Documents(text=norm, subject="", meta=())), WORD_FEATURES)
    base = CHAR_FEATURES + WORD_FEATURES
    idx = np.concatenate((ci, CHAR_FEATURES + wi, base + np.arange(len(dense))))
    return idx, np.concatenate((cv, wv, np.asarray(dense, dtype=np.float64)))


def design_matrix(texts: list[str], dense: np.ndarray):
    """The rows of :func:`row` as a CSR matrix (training and cross-validation)."""
    from scipy import sparse  # noqa: PLC0415

    rows = [row(t, d) for t, d in zip(texts, dense)]
    indptr = np.cumsum([0] + [len(i) for i, _ in rows])
    indices = np.concatenate([i for i, _ in rows]) if rows else np.empty(0, dtype=np.int64)
    data = np.concatenate([v for _, v in rows]) if rows else np.empty(0)
    return sparse.csr_matrix((data, indices, indptr), shape=(len(rows), CHAR_FEATURES + WORD_FEATURES + len(DENSE_NAMES)))


@dataclass
class IntentModel:
    """``probabilities(msg, ...)`` -> {intent: P}; a multinomial logistic regression."""

    coef: np.ndarray  # (len(INTENTS), n_features) float32
    intercept: np.ndarray  # (len(INTENTS),)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # transposed once, not per message, and kept float32 when the coefficients are (as trained
        # and stored): the rows a message reads are scattered over the table, and at half the size
        # fewer of them miss the cache; widening float32 to float64 is exact, so every score is
        # the one a float64 table gives
        dtype = np.float32 if self.coef.dtype == np.float32 else np.float64
        self._coef_t = np.ascontiguousarray(self.coef.T, dtype=dtype)

    def probabilities_of_rows(self, X) -> np.ndarray:
        z = np.asarray(X @ self._coef_t.astype(np.float64, copy=False)) + self.intercept
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def probabilities(self, msg: "ParsedMessage", outer: dict[str, float], outer_model_p: float | None,
                      inner: "Verdict | None") -> dict[str, float]:
        idx, vals = row(author_text(msg), dense_features(msg, outer, outer_model_p, inner))
        # np.take copies whole rows (a third of the time of ``self._coef_t[idx]``), same values
        z = vals @ np.take(self._coef_t, idx, axis=0).astype(np.float64, copy=False) + self.intercept
        e = np.exp(z - z.max())
        return {k: float(v) for k, v in zip(INTENTS, e / e.sum())}


def fit(texts: list[str], dense: np.ndarray, labels: list[str], *, C: float = 8.0) -> IntentModel:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    X = design_matrix(texts, dense)
    y = np.array([INTENTS.index(label) for label in labels])
    lr = LogisticRegression(C=C, max_iter=3000, class_weight="balanced")
    lr.fit(X, y)
    coef = np.zeros((len(INTENTS), X.shape[1]), dtype=np.float32)
    intercept = np.zeros(len(INTENTS))
    for row, cls in enumerate(lr.classes_):
        coef[cls] = lr.coef_[row]
        intercept[cls] = lr.intercept_[row]
    missing = [INTENTS[i] for i in range(len(INTENTS)) if i not in set(lr.classes_)]
    intercept[[INTENTS.index(m) for m in missing]] = -1e3  # a class never seen is never predicted
    return IntentModel(coef, intercept, {"classes_seen": [INTENTS[c] for c in lr.classes_], "C": C})


def save(model: IntentModel, out_dir: Path, metadata: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    artefact = out_dir / ARTEFACT_NAME
    tmp = out_dir / (ARTEFACT_NAME + ".tmp.npz")
    np.savez_compressed(tmp, coef=model.coef, intercept=model.intercept)
    tmp.replace(artefact)
    data = artefact.read_bytes()
    meta = {"format": FORMAT, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "intents": list(INTENTS), "dense": list(DENSE_NAMES), "char_features": CHAR_FEATURES,
            "word_features": WORD_FEATURES, "author_cues": author_cues.FINGERPRINT, **model.metadata, **metadata}
    meta_path = out_dir / METADATA_NAME
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return artefact, meta_path


class IntentModelError(ModelError):
    pass


def load(path: Path) -> IntentModel:
    """Load and verify an artefact against its metadata (hash, format, shapes)."""
    meta_path = path.with_name(METADATA_NAME)
    try:
        meta = json.loads(meta_path.read_text())
        data = path.read_bytes()
    except (OSError, ValueError) as exc:
        raise IntentModelError(f"{path}: cannot read the intent model or its metadata: {exc}") from None
    if meta.get("format") != FORMAT:
        raise IntentModelError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise IntentModelError(f"{path}: SHA-256 does not match {meta_path.name}: refusing a tampered artefact")
    if tuple(meta.get("intents", ())) != INTENTS or tuple(meta.get("dense", ())) != DENSE_NAMES:
        raise IntentModelError(f"{meta_path}: trained for other intents or features; retrain (guard train)")
    if meta.get("author_cues") != author_cues.FINGERPRINT:
        raise IntentModelError(f"{meta_path}: trained over other payment cue lists "
                               f"({meta.get('author_cues')!r}, these are {author_cues.FINGERPRINT!r}); "
                               "retrain (guard train --intent-only)")
    import io  # noqa: PLC0415

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        coef, intercept = z["coef"], z["intercept"]
    width = CHAR_FEATURES + WORD_FEATURES + len(DENSE_NAMES)
    if coef.shape != (len(INTENTS), width) or intercept.shape != (len(INTENTS),):
        raise IntentModelError(f"{path}: unexpected shapes {coef.shape}, {intercept.shape}")
    return IntentModel(coef, intercept, meta)
