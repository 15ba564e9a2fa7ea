"""guard.classification.features: the one feature extraction used by training and scoring."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from guard.classification import features as F
from guard.mail.message import parse

TEXTS = [
    "hello world",
    "a bb ccc dddd eeeee ffffff",
    "",
    "   ",
    "x",
    "réservez  votre\nchambre à 00€ ,  s'il vous plait",
    "official housing provider for the workshop; rooms are limited",
    "Ünïcödé wörds\tand\u00a0nbsp",
]


@pytest.mark.parametrize("text", TEXTS)
def test_char_ngrams_are_sklearn_char_wb(text):
    sk = CountVectorizer(analyzer="char_wb", ngram_range=F.CHAR_NGRAMS, lowercase=False).build_analyzer()
    assert sorted(F.char_ngrams(text)) == sorted(sk(" ".join(text.split())))


@pytest.mark.parametrize("text", TEXTS)
def test_char_codes_match_their_ngrams(text):
    grams, codes = F.char_ngrams_with_codes(text)
    assert np.array_equal(codes, F.char_codes(text))
    assert [F.char_code(g) for g in grams] == codes.tolist()
    assert sorted(grams) == sorted(F.char_ngrams(text))


def test_char_ngrams_are_capped():
    long = "word " * 5000
    assert len(F.char_codes(long)) == len(F.char_ngrams(long[: F.CHAR_CHARS]))


@pytest.mark.parametrize("text", TEXTS + ["straße über_all x1 2b ok", "привет мир 東京 大学", "a_b __ 00 0a", "\ud800ab cd\u0301e"])
def test_word_codes_match_their_terms(text):
    docs = F.Documents(text=text, subject=text[:20], meta=())
    words, codes = F.word_terms_with_codes(docs)
    tokens = F._WORD.findall(text)
    assert words[: len(tokens)] == tokens
    assert [F.word_code(w) for w in words] == codes.tolist()


def test_normalise():
    out = F.normalise("Réservez 3 NUITS: https://evil.example/x?y=1 or mail bob@evil.example")
    assert out == "reservez 0 nuits:  zzurl  or mail  zzemail "


MSG = (
    b"From: Housing Team <housing@gmail.com>\n"
    b"Reply-To: desk@booking-desk.example\n"
    b"To: prof@uni.example\n"
    b"Subject: Re: Rooms for the workshop 2026\n"
    b"Authentication-Results: mx.uni.example; spf=fail smtp.mailfrom=gmail.com; dkim=none; dmarc=fail\n"
    b"X-Mailer: BulkMailer 2\n"
    b"In-Reply-To: <a@b>\n"
    b"\n"
    b"We hold rooms. Pay at https://pay.booking-desk.example/now today.\n"
)


def test_meta_tokens():
    tokens = set(F.meta_tokens(parse(MSG)))
    expected = {"from:freemail", "replyto:differs", "fwd:none", "thread:reply", "subject:re", "links:1", "link:elsewhere", "atts:0"}
    assert expected <= tokens
    # provenance is not a feature (version 2): sender and link domains, authentication results, content type,
    # X-Mailer, HTML and language name where a corpus was collected, not what a message says
    leaked = {t for t in tokens if t.startswith(("from:gmail", "link:booking", "spf:", "dkim:", "dmarc:", "ct:", "xmailer:", "lang:"))}
    assert not leaked and "html" not in tokens


def test_documents_are_capped_and_normalised():
    raw = b"From: a@b.example\nSubject: Hello 2026\n\n" + ("mot " * 3000).encode()
    docs = F.documents(parse(raw))
    assert len(docs.text) <= F.TEXT_CHARS
    assert docs.subject == "hello 0000"


REPORT = (
    b"From: Ana <ana@uni.example>\nTo: events@crm.cat\nSubject: Fwd: payment\n\n"
    b"Dear events team, is this genuine?\n\nAna\n\n"
    b"---------- Forwarded message ---------\nFrom: Booking Desk <desk@hotel-crm.example>\nDate: Mon, 3 Nov 2025 10:00:00 +0100\n"
    b"Subject: payment\nTo: <ana@uni.example>\n\nSend your credit card number and CVV to zanzibarquux now.\n"
)


def test_report_features_leave_out_the_forwarded_message():
    msg = parse(REPORT)
    assert msg.forwarded, "the parser should find the inline forward"
    words, codes = F.word_terms_with_codes(F.documents(msg))
    assert np.array_equal(codes, F.terms(msg).word)
    assert "genuine" in words
    assert "zanzibarquux" not in words and "cvv" not in words
    assert "s:payment" not in words and "payment" not in words, "a forward's subject is the forwarded message's"
    assert "fwd:none" not in F.terms(msg).meta
    inner, _ = F.word_terms_with_codes(F.documents(msg.forwarded[0]))
    assert "zanzibarquux" in inner


def _terms(n=30):
    words = ["hotel", "room", "card", "visa", "invoice", "abstract", "talk", "dinner", "bank", "lunch"]
    out = []
    for i in range(n):
        text = " ".join(words[(i * k) % len(words)] for k in range(1, 6 + i % 5))
        out.append(F.terms_of(F.Documents(text=text, subject=words[i % len(words)], meta=(f"from:x{i % 3}.example", "lang:en"))))
    return out


def test_row_and_matrix_agree():
    ts = _terms()
    space = F.FeatureSpace.fit(ts, min_df={"word": 1, "char": 1, "meta": 1})
    X = space.matrix(ts)
    for i, t in enumerate(ts):
        cols, vals = space.row(t)
        dense = np.zeros(space.n_columns)
        dense[cols] = vals
        assert np.array_equal(X[i].toarray().ravel(), dense)


def test_weighting_is_sklearn_tfidf():
    ts = _terms()
    space = F.FeatureSpace.fit(ts, min_df={"word": 1, "char": 1, "meta": 1})
    word = space.blocks[0]
    sk = TfidfVectorizer(analyzer=lambda t: t.word.tolist(), sublinear_tf=True, lowercase=False)
    Xs = sk.fit_transform(ts)
    assert sorted(sk.vocabulary_) == word.codes.tolist()
    X = space.matrix(ts)[:, : len(word)]
    order = [sk.vocabulary_[c] for c in word.codes.tolist()]
    assert np.allclose(X.toarray(), Xs.toarray()[:, order], atol=1e-12)


def test_vocabulary_cap_and_determinism():
    ts = _terms()
    a = F.FeatureSpace.fit(ts, max_features={"char": 50}, min_df={"word": 1, "char": 1, "meta": 1})
    b = F.FeatureSpace.fit(list(reversed(ts)), max_features={"char": 50}, min_df={"word": 1, "char": 1, "meta": 1})
    assert len(a.blocks[1]) == 50
    assert np.array_equal(a.blocks[1].codes, b.blocks[1].codes)
    assert np.array_equal(a.blocks[0].codes, b.blocks[0].codes)
