"""Near-duplicate detection for the digest's campaigns: MinHash over word shingles. Pure.

A *fingerprint* is computed once, at decision time, from a message's normalised
subject and body (for a participant's report: from the forwarded message), and
only the fingerprint is journalled -- never the body. It is a short hex string
of :data:`NUM_HASHES` 32-bit minimum hashes of the text's word 3-shingles.

Two fingerprints are near-duplicates when the share of equal positions (an
estimate of the Jaccard similarity of the shingle sets) is at least
``threshold`` (0.5 by default): the same scam sent 40 times with a different
name, date or room count in each copy is one campaign. :func:`group` finds the
connected components of that relation, with locality-sensitive banding so
that only likely pairs are compared.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Sequence

import numpy as np

from guard.disjoint_sets import DisjointSets
from guard.mail.textutil import fold, strip_subject_prefixes

NUM_HASHES = 64
BANDS = 32  # 32 bands of 2 rows: a pair at Jaccard 0.5 shares a band with probability > 0.9999 (then verified)
SHINGLE = 3
_MASK = 0xFFFFFFFF
_PRIME = (1 << 61) - 1
# fixed, reproducible hash parameters (a, b) for the universal hash family h(x) = (a*x + b) mod p
_PARAMS = [
    (int.from_bytes(hashlib.sha256(f"guard-minhash-a-{i}".encode()).digest()[:8], "big") % (_PRIME - 1) + 1,
     int.from_bytes(hashlib.sha256(f"guard-minhash-b-{i}".encode()).digest()[:8], "big") % _PRIME)
    for i in range(NUM_HASHES)
]
_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_WORD = re.compile(r"\w+")


def normalise(subject: str, body: str) -> list[str]:
    """Words of subject + body: folded (lower case, no accents), reply prefixes dropped, and
    URLs, addresses and numbers replaced by placeholders (they differ between copies)."""
    text = strip_subject_prefixes(subject or "")[0] + "\n" + (body or "")
    text = _URL.sub(" url ", text)
    text = _EMAIL.sub(" email ", text)
    text = _NUMBER.sub(" num ", text)
    return _WORD.findall(fold(text))


def _grams(words: list[str]) -> list[str]:
    if not words:
        return []
    if len(words) < SHINGLE:
        return [" ".join(words)]
    return [" ".join(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)]


# -- the signature, vectorised -----------------------------------------------------------------
#
# h(x) = ((a*x + b) mod p) & 0xFFFFFFFF with p = 2**61 - 1, a in [1, p), b in [0, p) and 64-bit x,
# computed exactly in uint64 (the product a*x needs up to 125 bits, so it is never formed):
# x is first reduced mod p (same residue), then with a = ah*2**32 + al and x = xh*2**32 + xl
# (ah, xh < 2**29; al, xl < 2**32) and 2**61 = 1 (mod p), 2**64 = 8 (mod p):
#     a*x = ah*xh*2**64 + (ah*xl + al*xh)*2**32 + al*xl
#         = 8*ah*xh  +  (mid >> 29) + (mid & (2**29-1))*2**32  +  (lo & p) + (lo >> 61)   (mod p)
# where mid = ah*xl + al*xh < 2**62 and lo = al*xl < 2**64. Every term is below 2**61 + 2**33, so
# with b the sum stays below 2**64; one Mersenne fold and one conditional subtraction give the
# residue in [0, p). tests/unit/digest/test_campaigns.py checks it against the plain Python formula.

_U64 = np.uint64
_P = _U64(_PRIME)
_LO32 = _U64(0xFFFFFFFF)
_LO29 = _U64((1 << 29) - 1)
_A = np.array([a for a, _ in _PARAMS], dtype=np.uint64)[:, None]
_B = np.array([b for _, b in _PARAMS], dtype=np.uint64)[:, None]
_AH, _AL = _A >> _U64(32), _A & _LO32
_CHUNK = 2048  # shingles per block (bounds the temporaries at NUM_HASHES x _CHUNK x 8 bytes each)


def _mod_p(v: np.ndarray) -> np.ndarray:
    """v mod p for v < 2**64 (uint64): one Mersenne fold (< 2p), then at most one subtraction
    (v - p wraps around to a huge value when v < p, so the minimum picks the right one)."""
    v = (v & _P) + (v >> _U64(61))
    return np.minimum(v, v - _P)


def _signature(xs: np.ndarray) -> np.ndarray:
    """The NUM_HASHES minima of h_i over the 64-bit shingle hashes ``xs`` (uint64, not empty)."""
    sig = None
    for start in range(0, len(xs), _CHUNK):
        x = _mod_p(xs[start:start + _CHUNK])[None, :]
        xh, xl = x >> _U64(32), x & _LO32
        mid = _AH * xl + _AL * xh
        s = ((_AH * xh) << _U64(3)) + (mid >> _U64(29)) + ((mid & _LO29) << _U64(32))
        lo = _AL * xl
        s += (lo & _P) + (lo >> _U64(61)) + _B
        m = (_mod_p(s) & _LO32).min(axis=1)
        sig = m if sig is None else np.minimum(sig, m)
    return sig


def fingerprint(subject: str, body: str) -> str:
    """The MinHash signature of a message's normalised text, as hex ("" for an empty text)."""
    grams = _grams(normalise(subject, body))
    if not grams:
        return ""
    # the shingles' 64-bit hashes, big-endian as int.from_bytes(..., "big") reads them; duplicates
    # do not change a minimum, so no set is needed
    digests = b"".join([hashlib.blake2b(g.encode(), digest_size=8).digest() for g in grams])
    xs = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    return _signature(xs).astype(">u4").tobytes().hex()


def _unpack(fp: str) -> tuple[int, ...] | None:
    if not fp or len(fp) != NUM_HASHES * 8:
        return None
    try:
        return struct.unpack(f">{NUM_HASHES}I", bytes.fromhex(fp))
    except ValueError:
        return None


def similarity(fp1: str, fp2: str) -> float:
    """Estimated Jaccard similarity of two fingerprints (0.0 when either is missing or malformed)."""
    a, b = _unpack(fp1), _unpack(fp2)
    if a is None or b is None:
        return 0.0
    return sum(x == y for x, y in zip(a, b)) / NUM_HASHES


def group(fingerprints: Sequence[str], threshold: float = 0.5) -> list[int]:
    """A group number per fingerprint (near-duplicates share one; numbered in order of first member).

    A missing or malformed fingerprint is a group of its own."""
    n = len(fingerprints)
    sets = DisjointSets(n)
    find = sets.find
    sigs = [_unpack(f) for f in fingerprints]
    rows = NUM_HASHES // BANDS
    buckets: dict[tuple, list[int]] = {}
    for i, s in enumerate(sigs):
        if s is None:
            continue
        for band in range(BANDS):
            buckets.setdefault((band, s[band * rows:(band + 1) * rows]), []).append(i)
    checked: set[tuple[int, int]] = set()
    for members in buckets.values():
        for x, i in enumerate(members):
            for j in members[x + 1:]:
                if (i, j) in checked:
                    continue
                checked.add((i, j))
                if find(i) != find(j) and similarity(fingerprints[i], fingerprints[j]) >= threshold:
                    sets.union(i, j)
    numbers: dict[int, int] = {}
    out = []
    for i in range(n):
        root = find(i)
        if root not in numbers:
            numbers[root] = len(numbers)
        out.append(numbers[root])
    return out
