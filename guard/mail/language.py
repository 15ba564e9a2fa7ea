"""Language detection with the model bundled in ``py3langid`` (no download)."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

#: Languages guard expects in an events inbox; restricting the model to them
#: makes short messages far less likely to be read as an unrelated language.
LANGUAGES = ("en", "es", "ca", "fr", "de", "it", "pt", "nl", "pl", "ru", "zh", "ja", "ar", "el", "tr", "sv", "da", "ro", "cs")

_URLS = re.compile(r"\S+@\S+|https?://\S+|www\.\S+")


@functools.lru_cache(maxsize=1)
def _identifier():
    """The identifier, loaded once per process on first use. The first load unpacks
    py3langid's xz model (about 0.5 s) and keeps our languages' part uncompressed in a cache
    directory (``guard/cache.py``); every later process reads that in a few milliseconds."""
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


#: bump when the cached layout changes
_CACHE_VERSION = 1


def _cache_path(model_file: Path) -> Path | None:
    """The cache directory for py3langid's model file restricted to LANGUAGES (guard/cache.py)."""
    from guard.cache import entry

    return entry("langid", model_file, _CACHE_VERSION, ",".join(LANGUAGES))


def _load_cached(identifier_cls, directory: Path):
    """The identifier from an unpacked cache directory, or None when it is missing or damaged."""
    import mmap
    from array import array

    import numpy as np

    try:
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
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return identifier_cls(small["ptc"], small["pc"], small["classes"].tolist(), nextmove, small["out_feat"].tolist(),
                          norm_probs=True, tk_row=tk_row)


def _save_cached(ident, directory: Path) -> None:
    """Write the unpacked model (about 45 MB) beside a temporary name, then rename: a reader
    sees a whole directory or none. Any failure (read-only home, full disk) is ignored."""
    import shutil
    import tempfile

    import numpy as np

    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
        try:
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

    The parser calls it once per message, on the subject and the author's own text (embedded
    messages get their own call); the last few answers are remembered, so a second look at
    the same text (a reply's language) costs nothing."""
    return _detect_sample(_URLS.sub(" ", text[:max_chars]))


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
