"""The vectorised MinHash fingerprint is byte-identical to the plain Python formula it replaced.

Fingerprints are stored in users' journals and compared across versions, so the numpy version
(guard.digest.campaigns.fingerprint) must give exactly the same hex string as the original
implementation, kept here as the reference, for every text.
"""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.paths import samples_dir
from guard.digest import campaigns
from guard.digest.campaigns import _EMAIL, _MASK, _NUMBER, _PARAMS, _PRIME, _URL, _WORD, NUM_HASHES, SHINGLE
from guard.mail.textutil import fold, strip_subject_prefixes


def reference_normalise(subject: str, body: str) -> list[str]:
    text = strip_subject_prefixes(subject or "")[0] + "\n" + (body or "")
    text = _URL.sub(" url ", text)
    text = _EMAIL.sub(" email ", text)
    text = _NUMBER.sub(" num ", text)
    return _WORD.findall(fold(text))


def reference_shingles(words: list[str]) -> set[int]:
    if not words:
        return set()
    if len(words) < SHINGLE:
        grams = [" ".join(words)]
    else:
        grams = [" ".join(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)]
    return {int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big") for g in grams}


def reference_fingerprint(subject: str, body: str) -> str:
    """The original pure-Python implementation (before the numpy version)."""
    sh = reference_shingles(reference_normalise(subject, body))
    if not sh:
        return ""
    sig = [min(((a * x + b) % _PRIME) & _MASK for x in sh) for a, b in _PARAMS]
    return struct.pack(f">{NUM_HASHES}I", *sig).hex()


WORDS = ["hotel", "room", "Réservez", "VOTRE", "chambre", "card", "4111", "www.example.org", "pay@evil.example",
         "Straße", "ﬁnance", "ø", "naïve", "日本語", "привет", "ℌ", "١٢٣", "e\u0301", "RE:", "Fwd:", "…", "’", "\x00"]

texts = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(WORDS), max_size=60).map(" ".join),
    st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
             max_size=40).map(" ".join),
)


@settings(max_examples=1500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(subject=texts, body=texts)
def test_fingerprint_equals_the_reference_for_any_text(subject, body):
    assert campaigns.fingerprint(subject, body) == reference_fingerprint(subject, body)


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_normalise_is_unchanged(text):
    assert campaigns.normalise(text, text) == reference_normalise(text, text)


def test_fingerprint_edge_cases():
    cases = [("", ""), ("", " \n\t "), ("Re: Fwd:", ""), ("hello", ""), ("", "hello"), ("a b", ""),
             ("a b c", ""), ("Inscripció", "al taller de Dolça Pérez — ¿y la habitación?"),
             ("日本語のテキスト", "привет мир 123 https://x.example/a?b=1 pat@example.org"),
             ("x", "word " * 5000), ("x", " ".join(f"w{i}" for i in range(9000)))]  # > one numpy block
    for subject, body in cases:
        fp = campaigns.fingerprint(subject, body)
        assert fp == reference_fingerprint(subject, body)
        assert fp == "" or len(fp) == NUM_HASHES * 8


def test_fingerprint_of_the_sample_messages():
    from pathlib import Path

    from guard.mail.message import parse

    for path in sorted(samples_dir().glob("*.eml")):
        msg = parse(path.read_bytes())
        for m in (msg, *msg.forwarded):
            assert campaigns.fingerprint(m.subject, m.text) == reference_fingerprint(m.subject, m.text), path.name


def test_signature_arithmetic_is_exact_at_the_extremes():
    """The uint64 modular multiplication against Python integers, for extreme and random 64-bit x."""
    rng = random.Random(1)
    p = _PRIME
    xs = [0, 1, 2, p - 1, p, p + 1, 2 * p, 2 * p + 1, 3 * p - 1, (1 << 61), (1 << 63), (1 << 64) - 1,
          (1 << 64) - 2, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, ((1 << 29) - 1) << 32, 0xFFFFFFFF << 29]
    xs += [rng.getrandbits(64) for _ in range(5000)] + [rng.getrandbits(rng.randint(1, 64)) for _ in range(3000)]
    for chunk in (xs[:1], xs[:18], xs, xs[::-1]):
        got = campaigns._signature(np.array(chunk, dtype=np.uint64))
        want = [min(((a * x + b) % p) & _MASK for x in chunk) for a, b in _PARAMS]
        assert got.tolist() == want
    # one value at a time: every position of the product, not only the minimum
    for x in xs[:18] + xs[18:200]:
        got = campaigns._signature(np.array([x], dtype=np.uint64)).tolist()
        assert got == [((a * x + b) % p) & _MASK for a, b in _PARAMS]


def test_extreme_hash_parameters():
    """a and b at the ends of their ranges (the shipped parameters are random): the formula stays exact."""
    p = _PRIME
    params = [(1, 0), (p - 1, p - 1), (p - 1, 0), (1, p - 1), ((1 << 61) - 2, (1 << 60)), ((1 << 32) - 1, 5),
              (((1 << 29) - 1) << 32 | 0xFFFFFFFF, p - 1)]
    a = np.array([x for x, _ in params], dtype=np.uint64)[:, None]
    b = np.array([y for _, y in params], dtype=np.uint64)[:, None]
    saved = campaigns._A, campaigns._B, campaigns._AH, campaigns._AL
    try:
        campaigns._A, campaigns._B = a, b
        campaigns._AH, campaigns._AL = a >> np.uint64(32), a & np.uint64(0xFFFFFFFF)
        xs = [0, 1, p - 1, p, (1 << 64) - 1, (1 << 63) + 12345, ((1 << 29) - 1) << 32 | 0xFFFFFFFF]
        for x in xs:
            got = campaigns._signature(np.array([x], dtype=np.uint64)).tolist()
            assert got == [((ai * x + bi) % p) & _MASK for ai, bi in params]
    finally:
        campaigns._A, campaigns._B, campaigns._AH, campaigns._AL = saved
