"""Domain helpers: registrable domains and look-alike detection.

The registrable domain ("crm.cat" for "events.crm.cat", "example.co.uk" for
"a.b.example.co.uk") comes from the Public Suffix List bundled with the
``publicsuffixlist`` package, so no network is needed.

Look-alikes are found three ways, each reported with its own reason:

* homoglyphs: both names reduced to a *skeleton* built from the Unicode
  confusables data shipped by ``confusable_homoglyphs`` ("crrn.cat" and
  "crm.cat" share the skeleton because "rn" is listed as confusable with "m";
  "сrm.cat" with a Cyrillic "с" likewise);
* edit distance on the label left of the public suffix (rapidfuzz), scaled to
  the label length so short names need a closer match;
* an official name (institute or event short name) used as a token inside a
  foreign domain ("crm-housing.com").
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass

import confusable_homoglyphs
from rapidfuzz.distance import Levenshtein

from guard.pickling import fast_pickle


@functools.lru_cache(maxsize=1)
def _psl():
    """The bundled Public Suffix List, parsed once, on first use. The package's own parser
    IDNA-encodes all of its ~10,000 lines (0.2 s at every start); only the few hundred
    non-ASCII ones change, so those are encoded here and the package is told not to: the same
    suffix set (tests/unit/mail/test_domains_psl.py)."""
    from pathlib import Path

    from publicsuffixlist import PSLFILE, PublicSuffixList, encode_idn

    from guard.cache import json_cached

    def build() -> list[str]:
        lines = []
        with open(PSLFILE, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "surrogateescape").lower().split(" ")[0].rstrip()
                if not line or line.startswith("//"):
                    continue
                lines.append(line)
                if not line.isascii():
                    e = encode_idn(line.lstrip("!"))
                    lines.append("!" + e if line[0] == "!" else e)
        return lines

    # the parsed list is kept in guard's cache: the parser's own state after reading the prepared
    # lines (IDNA done), that is the suffix set and the longest suffix's label count. Only when the
    # installed package's parser leaves nothing else (checked when the entry is written); the entry's
    # name carries the list file and the package's code. 0.2 s -> 0.003 s at a start.
    import publicsuffixlist  # noqa: PLC0415

    from guard import cache  # noqa: PLC0415

    where = cache.entry("psl-parsed", Path(PSLFILE), 1, cache.code_key(publicsuffixlist.__file__))
    kept = cache.read_json(where)
    if isinstance(kept, dict) and set(kept) == {"suffixes", "maxlabel"}:
        psl = PublicSuffixList([], accept_encoded_idn=False)
        if set(vars(psl)) == _PSL_STATE:
            psl._publicsuffix = frozenset(kept["suffixes"])
            psl._maxlabel = kept["maxlabel"]
            return psl
    psl = PublicSuffixList(json_cached("psl", Path(PSLFILE), build, 1), accept_encoded_idn=False)
    state = vars(psl)
    if set(state) == _PSL_STATE and type(state["_publicsuffix"]) is frozenset and type(state["_maxlabel"]) is int:
        cache.write_json(where, {"suffixes": sorted(state["_publicsuffix"]), "maxlabel": state["_maxlabel"]})
    return psl


#: what publicsuffixlist's parser sets (see _psl)
_PSL_STATE = {"accept_unknown", "_publicsuffix", "_maxlabel"}


@functools.lru_cache(maxsize=65536)
def registrable(host: str) -> str:
    """The registrable domain of a host name, lower-cased; the host itself when unknown."""
    host = host.strip().strip(".").lower()
    if not host:
        return ""
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        pass
    try:
        found = _psl().privatesuffix(host)
    except Exception:
        found = None
    return found or host


def public_suffix(host: str) -> str:
    try:
        return _psl().publicsuffix(host.lower()) or ""
    except Exception:
        return ""


def label_of(domain: str) -> str:
    """The part of a registrable domain left of its public suffix ("crm" for "crm.cat")."""
    suffix = public_suffix(domain)
    if suffix and domain.endswith("." + suffix):
        return domain[: -len(suffix) - 1]
    return domain.split(".", 1)[0]


def _build_skeleton_tables() -> tuple[dict[str, str], list[tuple[str, str]]]:
    path = os.path.join(os.path.dirname(confusable_homoglyphs.__file__), "confusables.json")
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    single: dict[str, str] = {}
    multi: list[tuple[str, str]] = []
    target = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    for char, entries in data.items():
        for entry in entries:
            glyph = entry["c"].lower()
            if len(char) != 1:
                continue
            low = char.lower()
            if not low.isascii() and len(glyph) == 1 and glyph in target:
                single.setdefault(low, glyph)
            elif low in target and len(glyph) > 1 and all(g in target for g in glyph):
                # an ASCII sequence that looks like one ASCII letter ("rn" ~ "m")
                multi.append((glyph, low))
    # digits and letters commonly swapped in domains
    single.update({"0": "o", "1": "l", "i": "l", "|": "l"})
    multi.sort(key=lambda pair: -len(pair[0]))
    return single, multi


def _skeleton_tables() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Built from confusable_homoglyphs' 2 MB JSON once, then read from guard's cache (60 ms -> 1 ms)."""
    from pathlib import Path

    from guard.cache import json_cached

    source = Path(confusable_homoglyphs.__file__).parent / "confusables.json"
    single, multi = json_cached("skeleton", source, lambda: list(_build_skeleton_tables()), 1)
    return single, [tuple(pair) for pair in multi]


_SINGLE, _MULTI = _skeleton_tables()


@functools.lru_cache(maxsize=65536)
def skeleton(name: str) -> str:
    """A form of a domain name where visually confusable spellings coincide."""
    name = name.lower()
    name = "".join(_SINGLE.get(ch, ch) for ch in name)
    for seq, repl in _MULTI:
        if seq in name:
            name = name.replace(seq, repl)
    return "".join(_SINGLE.get(ch, ch) for ch in name)


@fast_pickle
@dataclass(frozen=True, slots=True)
class LookAlike:
    domain: str
    official: str
    how: str  # "homoglyph", "edit-distance" or "name-inside"


_TOKEN_SPLIT = re.compile(r"[.\-_0-9]+")


def find_lookalike(domain: str, official_domains: tuple[str, ...], official_names: tuple[str, ...]) -> LookAlike | None:
    """Whether ``domain`` imitates one of the official domains or names.

    ``official_domains`` are registrable domains (crm.cat); ``official_names``
    are short lower-case names (crm, mfml2026) that should not appear in a
    foreign domain. An official domain itself, or a subdomain of one, never
    matches.
    """
    dom = registrable(domain)
    if not dom or dom in official_domains:
        return None
    label = _unicode(label_of(dom))
    skel = skeleton(label)
    for off in official_domains:
        off_label = label_of(off)
        if skeleton(off_label) == skel and (label != off_label or len(off_label) >= 4):
            # the very same short name under another suffix is no imitation by itself: unrelated
            # organisations share two- and three-letter names (ua.pt, Aveiro; ua.es, Alicante). The
            # institute's own short names are protected_names, caught as "name-inside" below.
            return LookAlike(dom, off, "homoglyph")
        n = len(off_label)
        if n >= 8:
            if Levenshtein.distance(label, off_label, score_cutoff=2) <= 2:
                return LookAlike(dom, off, "edit-distance")
        elif n >= 4 and abs(len(label) - n) <= 1 and _typo_shaped(label, off_label):
            return LookAlike(dom, off, "edit-distance")
    # the whole host counts here: "crm.cat.example.com" uses the name as well
    host = domain.lower().strip(".")
    suffix = public_suffix(host)
    left = host[: -len(suffix) - 1] if suffix and host.endswith("." + suffix) else host
    tokens = {t for t in _TOKEN_SPLIT.split(left) if t}
    for name in official_names:
        if len(name) < 3:
            continue
        if name in tokens or (len(name) >= 6 and name in left):
            return LookAlike(dom, name, "name-inside")
    return None


def _typo_shaped(label: str, official: str) -> bool:
    """Whether one edit that turns ``official`` into ``label`` is an imitation's: two neighbours
    swapped (bris/birs), a letter doubled or dropped from a pair (crmm), a hyphen or a digit put in
    (bir5, cr-m). One letter for another is not: short names of unrelated organisations differ by
    just that (unipi.it, Pisa, and unimi.it, Milan); letters that look alike are the skeleton's."""
    if len(label) == len(official):
        diff = [i for i, (a, b) in enumerate(zip(label, official)) if a != b]
        if len(diff) == 2 and diff[1] == diff[0] + 1:
            i = diff[0]
            return label[i] == official[i + 1] and label[i + 1] == official[i]
        return len(diff) == 1 and (not label[diff[0]].isalpha() or not official[diff[0]].isalpha())
    longer, shorter = (label, official) if len(label) > len(official) else (official, label)
    for i, ch in enumerate(longer):
        if longer[:i] + longer[i + 1:] == shorter:
            neighbours = longer[i - 1: i] + longer[i + 1: i + 2]
            return not ch.isalpha() or ch in neighbours
    return False


def _unicode(label: str) -> str:
    """Punycode labels back to Unicode, so homoglyphs can be compared."""
    if "xn--" not in label:
        return label
    try:
        return label.encode("ascii").decode("idna")
    except UnicodeError:
        return label
