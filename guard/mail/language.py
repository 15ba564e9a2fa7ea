"""Language detection with the model bundled in ``py3langid`` (no download)."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from guard.mail.textutil import may_hold_link

#: Languages guard expects in an events inbox; restricting the model to them
#: makes short messages far less likely to be read as an unrelated language.
LANGUAGES = ("en", "es", "ca", "fr", "de", "it", "pt", "nl", "pl", "ru", "zh", "ja", "ar", "el", "tr", "sv", "da", "ro", "cs")

_URLS = re.compile(r"\S+@\S+|https?://\S+|www\.\S+")


@functools.lru_cache(maxsize=1)
def _identifier():
    """The identifier, loaded once per process on first use. The first load unpacks
    py3langid's xz model (about 0.5 s), checks that its tokenizer is the longest-suffix automaton
    of its n-grams (below) and keeps our languages' part and those n-grams in a cache directory
    (``guard/cache.py``, about 5 MB); every later process reads that in a few milliseconds."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    try:
        cached = _cache_path(MODEL_DIR / MODEL_FILE)
        if cached is not None:
            ident = _load_cached(LanguageIdentifier, cached)
            if ident is not None:
                return ident
        ident = _load_restricted(LanguageIdentifier, MODEL_DIR / MODEL_FILE, LANGUAGES)
        if cached is not None:
            _save_cached(ident, cached)
        return ident
    except Exception:  # an unexpected model layout: the library's own (hungrier) loader
        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        ident.set_languages(list(LANGUAGES))
        if hasattr(ident, "_full_model"):
            ident._full_model = None
        return ident


#: bump when the cached layout changes (2: the tokenizer as n-gram tables, see _SuffixTables)
_CACHE_VERSION = 2


def _cache_path(model_file: Path) -> Path | None:
    """The cache directory for py3langid's model file restricted to LANGUAGES (guard/cache.py)."""
    from guard.cache import entry

    return entry("langid", model_file, _CACHE_VERSION, ",".join(LANGUAGES))


# -- the tokenizer without its transition table ---------------------------------------------------
#
# py3langid counts, for every byte of the text, the feature of the state its tokenizer (a DFA over
# bytes) is in after that byte. The DFA has 104,583 states and a 39 MB transition table; walking it
# touches a new part of that table for almost every message, so a long-running guard kept about
# 30 MB of it resident. The DFA is an Aho-Corasick automaton: the state after each byte is the
# longest suffix (at most 6 bytes) of the text read so far that is a prefix of one of its n-grams.
# So the same states follow from the text itself: for each length, the codes of all windows of
# that length ending at each byte, looked up in the sorted codes of the states of that depth (1.3
# MB in all). _SuffixTables.build checks that every one of the 26.8 million transitions agrees
# before the tables are used; when one does not, the DFA itself is kept (the layout of version 1).


class _SuffixTables:
    """Per depth n (1..6): the sorted big-endian codes of the states' n-byte strings and each
    state's feature (-1: none); ``root`` is the feature of the start state. Depths 1 and 2 are
    also indexed directly (``dense``: code -> position, -1 for none)."""

    __slots__ = ("codes", "feats", "root", "dense")

    def __init__(self, codes, feats, root: int) -> None:
        import numpy as np

        self.codes, self.feats, self.root = list(codes), list(feats), int(root)
        self.dense = []
        for n in (1, 2):
            index = np.full(1 << (8 * n), -1, dtype=np.int64)
            if n <= len(self.codes):
                index[self.codes[n - 1].astype(np.int64)] = np.arange(len(self.codes[n - 1]))
            self.dense.append(index)

    @classmethod
    def build(cls, nextmove, tk_row, tk_output) -> "_SuffixTables | None":
        """The tables of a DFA (flat transition rows, state -> row, state -> feature), or None
        when the DFA is not the longest-suffix automaton of its states' strings."""
        import numpy as np

        nm = np.frombuffer(nextmove, dtype=np.dtype(nextmove.typecode)).reshape(-1, 256)
        row = np.frombuffer(tk_row, dtype=np.dtype(tk_row.typecode)).astype(np.int64)
        out = np.asarray(tk_output, dtype=np.int64)
        states = len(row)
        if len(out) != states or not states:
            return None
        depth = np.full(states, -1, dtype=np.int64)
        code = np.zeros(states, dtype=np.uint64)
        depth[0] = 0
        frontier, d, byte = np.zeros(1, dtype=np.int64), 0, np.arange(256, dtype=np.uint64)
        while len(frontier):  # breadth first: a state's string is the shortest one leading to it
            reached_all = []
            for part in np.array_split(frontier, max(1, len(frontier) // 2048)):  # bounded memory
                dst = nm[row[part]].astype(np.int64)
                src, via = np.nonzero(depth[dst] < 0)
                reached, first = np.unique(dst[src, via], return_index=True)
                depth[reached] = d + 1
                code[reached] = (code[part[src[first]]] << np.uint64(8)) | byte[via[first]]
                reached_all.append(reached)
            frontier, d = np.concatenate(reached_all), d + 1
        max_depth = int(depth.max())
        if (depth < 0).any() or not 1 <= max_depth <= 7:
            return None
        codes, feats, ids_of = [], [], []
        for n in range(1, max_depth + 1):
            ids = np.nonzero(depth == n)[0]
            ids = ids[np.argsort(code[ids], kind="stable")]
            if len(np.unique(code[ids])) != len(ids):
                return None
            codes.append(code[ids])
            feats.append(out[ids])
            ids_of.append(ids)

        def state(n: int, keys):  # the state whose string is each n-byte key, -1 for none
            pos = np.minimum(np.searchsorted(codes[n - 1], keys), len(codes[n - 1]) - 1)
            return np.where(codes[n - 1][pos] == keys, ids_of[n - 1][pos], -1)

        # The check, by induction on the depth of a state s: its row sends each byte c to the state of
        # the longest suffix of w(s) + c that is a state's string when (1) for each child x of s (the
        # state of w(s) + c) the row has x at c, and (2) everywhere else the row is the row of s's
        # failure state f(s) (the longest proper suffix of w(s) that is a state's string; the root
        # when there is none) -- for the root, everywhere else the root itself.
        fail = np.zeros(states, dtype=np.int64)
        for n in range(1, max_depth):
            deeper = np.nonzero(depth > n)[0]
            found = state(n, code[deeper] & np.uint64((1 << (8 * n)) - 1))
            fail[deeper[found >= 0]] = found[found >= 0]  # a longer suffix wins
        nodes = np.nonzero(depth > 0)[0]
        parent = np.zeros(len(nodes), dtype=np.int64)
        for n in range(2, max_depth + 1):
            at = np.nonzero(depth[nodes] == n)[0]
            parent[at] = state(n - 1, code[nodes[at]] >> np.uint64(8))
        last = (code[nodes] & np.uint64(0xFF)).astype(np.int64)
        if (parent < 0).any() or not np.array_equal(nm[row[parent], last].astype(np.int64), nodes):
            return None  # (1)
        beside = np.where(parent == 0, 0, nm[row[fail[parent]], last].astype(np.int64))
        if (beside == nodes).any():  # so that a child is one of the places where a row differs ...
            return None
        children = np.bincount(parent, minlength=states)  # ... and there is no other place
        for chunk in np.array_split(np.arange(states), max(1, states // 4096)):  # (2), bounded memory
            own = nm[row[chunk]]
            other = np.zeros_like(own) if chunk[0] == 0 else nm[row[fail[chunk]]]
            if chunk[0] == 0:
                other[1:] = nm[row[fail[chunk[1:]]]]
            if not np.array_equal((own != other).sum(axis=1), children[chunk]):
                return None
        return cls(codes, feats, out[0])

    def visits(self, text: bytes) -> dict[int, int] | None:
        """{feature: count} in the order of first visit (as ``py3langid.langid.visit_counts``), or None."""
        found = self.visit_arrays(text)
        return None if found is None else dict(zip(found[0].tolist(), found[1].tolist()))

    def visit_arrays(self, text: bytes):
        """(features, counts) of :meth:`visits` as arrays in the order of first visit, or None.

        The state after byte i is the longest window ending at i that is a state. The states'
        strings are prefix-closed, so a window of n bytes can only be one where the window of
        n - 1 bytes ending one byte earlier was: each depth looks up only those. It runs for every
        message, so each depth is few numpy operations on small arrays: the keys of a binary search
        are sorted first when there are many (``searchsorted`` is about three times as fast on
        sorted keys, far more than the sort costs), and the counts in order of first visit come from
        one stable sort instead of ``np.unique``."""
        import numpy as np

        n = len(text)
        if not n:
            return None
        data = np.frombuffer(text, dtype=np.uint8)
        feat = np.full(n, self.root, dtype=np.int64)
        found = self.dense[0][data]  # depth 1
        at = np.flatnonzero(found >= 0)  # positions where the window of this depth is a state
        feat[at] = self.feats[0][found[at]]
        data64 = data.astype(np.uint64)
        window = data64[at]  # window[j]: the code of the window ending at at[j]
        eight = np.uint64(8)
        for depth in range(2, len(self.codes) + 1):
            if len(at) and at[-1] == n - 1:  # at is increasing: only its last can end the text
                at, window = at[:-1], window[:-1]
            if not len(at):
                break
            at = at + 1
            window = (window << eight) | data64[at]
            if depth == 2:
                pos = self.dense[1][window.astype(np.intp)]
                hit = pos >= 0
            else:
                codes = self.codes[depth - 1]
                if len(window) > _SORT_KEYS_FROM:
                    order = np.argsort(window)
                    pos = np.empty(len(window), dtype=np.intp)
                    pos[order] = codes.searchsorted(window[order])
                else:
                    pos = codes.searchsorted(window)
                np.minimum(pos, len(codes) - 1, out=pos)
                hit = codes[pos] == window
            at, window = at[hit], window[hit]
            feat[at] = self.feats[depth - 1][pos[hit]]  # a longer state wins
        feat = feat[feat >= 0]
        if not len(feat):
            return None
        order = np.argsort(feat, kind="stable")  # equal features keep their order: the first is the first visit
        ranked = feat[order]
        first = np.flatnonzero(np.concatenate(([True], ranked[1:] != ranked[:-1])))
        counts = np.diff(np.append(first, len(ranked)))
        by_visit = np.argsort(order[first])  # distinct first positions: no ties
        return ranked[first][by_visit], counts[by_visit]


#: below this many keys a binary search is not worth sorting them for
_SORT_KEYS_FROM = 64


def _suffix_identifier(identifier_cls, ptc, pc, classes, tables: _SuffixTables):
    """A py3langid identifier whose tokenizer is ``tables`` (no transition table in memory)."""
    from array import array

    import numpy as np

    class SuffixIdentifier(identifier_cls):
        __slots__ = ("_suffix",)

        def _raw_score(self, text):
            found = self._suffix.visit_arrays(text)
            if found is not None:
                # the library's _sparse_score(visits, nb_ptc) on the same numbers, without building
                # the {feature: count} dict and reading it back (tests/unit/mail/test_language.py);
                # the rows gathered with np.take, which copies whole rows (far quicker than indexing)
                feats, counts = found
                rows = np.take(self.nb_ptc, feats.astype(np.intp, copy=False), axis=0)
                return np.log1p(counts.astype(np.float32)) @ rows + self.nb_pc
            return super()._raw_score(b"")  # the library's own answer for a featureless text

    ident = SuffixIdentifier(ptc, pc, classes, array("I"), [], norm_probs=True, tk_row=array("H"))
    ident._suffix = tables
    return ident


def _load_cached(identifier_cls, directory: Path):
    """The identifier from an unpacked cache directory, or None when it is missing or damaged."""
    import numpy as np

    try:
        if (directory / "suffix.npz").is_file():
            with np.load(directory / "suffix.npz", allow_pickle=False) as z:
                depth = int(z["depth"])
                codes = [z[f"codes{n}"] for n in range(1, depth + 1)]
                feats = [z[f"feats{n}"] for n in range(1, depth + 1)]
                ptc, pc, classes, root = z["ptc"], z["pc"], z["classes"].tolist(), int(z["root"])
            if not 1 <= depth <= 7 or any(len(c) != len(f) for c, f in zip(codes, feats)):
                return None
            tables = _SuffixTables(codes, feats, root)
            return _suffix_identifier(identifier_cls, ptc, pc, classes, tables)
        return _load_cached_dfa(identifier_cls, directory)
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _load_cached_dfa(identifier_cls, directory: Path):
    """A cache directory holding the DFA itself (a model whose tokenizer is not a suffix automaton)."""
    import mmap
    from array import array

    import numpy as np

    with np.load(directory / "small.npz", allow_pickle=False) as z:
        small = {k: z[k] for k in ("ptc", "pc", "classes", "out_feat", "nextmove_row", "meta")}
    typecode, count, row_code = (str(x) for x in small["meta"].tolist())
    # mapped, not read: only the pages the tokenizer walks become resident (and they are
    # shared between guard processes); indexing a memoryview is as quick as an array
    with open(directory / "nextmove.bin", "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    nextmove = memoryview(mapped).cast(typecode)
    if len(nextmove) != int(count):
        return None
    tk_row = array(row_code)
    tk_row.frombytes(small["nextmove_row"].tobytes())
    return identifier_cls(small["ptc"], small["pc"], small["classes"].tolist(), nextmove, small["out_feat"].tolist(),
                          norm_probs=True, tk_row=tk_row)


def _save_cached(ident, directory: Path) -> None:
    """Write the unpacked model beside a temporary name, then rename: a reader sees a whole
    directory or none. The tokenizer goes as n-gram tables when they reproduce it (about 5 MB in
    all), else as the DFA (about 45 MB). Any failure (read-only home, full disk) is ignored."""
    import shutil
    import tempfile

    import numpy as np

    try:
        tables = _SuffixTables.build(ident.tk_nextmove, ident.tk_row, ident.tk_output)
    except (ValueError, TypeError, AttributeError, MemoryError):
        tables = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
        try:
            if tables is not None:
                arrays = {f"codes{n}": c for n, c in enumerate(tables.codes, 1)}
                arrays.update({f"feats{n}": f.astype(np.int32) for n, f in enumerate(tables.feats, 1)})
                np.savez(tmp / "suffix.npz", ptc=ident.nb_ptc, pc=ident.nb_pc, classes=np.array(ident.nb_classes),
                         depth=np.array(len(tables.codes)), root=np.array(tables.root), **arrays)
            else:
                nm, row = ident.tk_nextmove, ident.tk_row
                np.savez(tmp / "small.npz", ptc=ident.nb_ptc, pc=ident.nb_pc, classes=np.array(ident.nb_classes),
                         out_feat=np.array(ident.tk_output, dtype=np.int64),
                         nextmove_row=np.frombuffer(row.tobytes(), dtype=np.dtype(row.typecode)),
                         meta=np.array([nm.typecode, str(len(nm)), row.typecode]))
                with open(tmp / "nextmove.bin", "wb") as f:
                    nm.tofile(f)
            os.replace(tmp, directory)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass


def _load_restricted(identifier_cls, path, languages):
    """Load py3langid's model keeping only ``languages``, streaming the big arrays.

    The library's loader holds the full feature x language table (142 languages)
    and two copies of the tokenizer table at once: about 110 MB for a moment, which
    alone breaks guard's 150 MB budget. Here the npz (layout documented in
    ``py3langid.modelio``: ptc, pc, classes, nextmove, nextmove_row, out_feat) is
    read member by member from a temporary file, the feature table row-chunk by
    row-chunk with only our languages' columns kept, and the tokenizer table
    straight into the stdlib array the identifier uses.
    """
    import lzma
    import shutil
    import tempfile
    import zipfile
    from array import array

    import numpy as np

    typecodes = {2: "H", 4: "I", 8: "L"}

    def header(f):
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return shape, dtype

    with tempfile.TemporaryFile(suffix=".npz") as tmp:
        with lzma.open(path) as src:
            shutil.copyfileobj(src, tmp, length=1 << 20)
        tmp.seek(0)
        with zipfile.ZipFile(tmp) as z:
            small = {}
            for name in ("pc", "classes", "nextmove_row", "out_feat"):
                with z.open(name + ".npy") as f:
                    small[name] = np.lib.format.read_array(f, allow_pickle=False)
            classes = small["classes"].tolist()
            keep = [i for i, c in enumerate(classes) if c in set(languages)]
            with z.open("ptc.npy") as f:
                (rows, cols), dtype = header(f)
                if cols != len(classes):
                    raise ValueError("ptc does not match classes")
                parts, step = [], 8192
                for start in range(0, rows, step):
                    n = min(step, rows - start)
                    chunk = np.frombuffer(f.read(n * cols * dtype.itemsize), dtype=dtype).reshape(n, cols)
                    parts.append(chunk[:, keep].copy())
                ptc = np.concatenate(parts)
            with z.open("nextmove.npy") as f:
                (count,), dtype = header(f)
                nextmove = array(typecodes[dtype.itemsize])
                remaining = count
                while remaining:
                    n = min(remaining, 1 << 20)
                    nextmove.frombytes(f.read(n * dtype.itemsize))
                    remaining -= n
    row = small["nextmove_row"]
    tk_row = array(typecodes[row.dtype.itemsize])
    tk_row.frombytes(np.ascontiguousarray(row).tobytes())
    return identifier_cls(
        ptc, small["pc"][keep], [classes[i] for i in keep], nextmove, small["out_feat"].tolist(),
        norm_probs=True, tk_row=tk_row,
    )


def preload() -> None:
    """Load the language model now: unpacking it briefly needs ~26 MB more, best done
    before the rules and the scam model are in memory."""
    _identifier()


def detect(text: str, *, max_chars: int = 3000) -> str:
    """ISO 639-1 code of the text's language, or "und" when there is too little to tell.

    Called only when a reply's language is chosen (:mod:`guard.respond.languages`, and
    ``ParsedMessage.language`` on first use); no rule or model reads the language. The last few
    answers are remembered, so a second look at the same text costs nothing."""
    sample = text[:max_chars]
    if "@" in sample or may_hold_link(sample):  # else _URLS cannot match: no scan
        sample = _URLS.sub(" ", sample)
    return _detect_sample(sample)


@functools.lru_cache(maxsize=64)
def _detect_sample(sample: str) -> str:
    letters = 0
    for ch in sample:  # at least 12 letters; stops at the 12th
        if ch.isalpha():
            letters += 1
            if letters >= 12:
                break
    else:
        return "und"
    try:
        lang, prob = _identifier().classify(sample)
    except Exception:
        return "und"
    return lang if prob >= 0.5 else "und"
