"""A per-user cache of derived data that is slow to rebuild at every start (the unpacked
language model, the homoglyph tables). Nothing in it is needed: a missing, unwritable or damaged
cache only means the data is rebuilt from the installed packages, as it always can be.

Where: ``$GUARD_CACHE_DIR``, systemd's ``$CACHE_DIRECTORY`` (``CacheDirectory=guard``),
``$XDG_CACHE_HOME/guard`` or ``~/.cache/guard``; ``GUARD_CACHE_DIR=""`` turns it off. Each
entry's name carries a hash of what it was derived from (file, size, modification time and a
version), so an upgraded package never meets a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def cache_dir() -> Path | None:
    explicit = os.environ.get("GUARD_CACHE_DIR")
    if explicit is not None:
        return Path(explicit) if explicit else None
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "guard"


def entry(name: str, source: Path, *extra: object) -> Path | None:
    """The cache path for data derived from ``source`` (plus ``extra`` keys), or None without a cache."""
    base = cache_dir()
    if base is None:
        return None
    try:
        st = source.stat()
    except OSError:
        return None
    key = "|".join(str(x) for x in (source, st.st_size, st.st_mtime_ns, *extra))
    return base / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def json_cached(name: str, source: Path, build: Callable[[], object], *extra: object):
    """``build()``, kept as JSON in the cache: later processes read it instead of rebuilding."""
    path = entry(name, source, *extra)
    if path is not None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    value = build()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(value, f, ensure_ascii=False)
            os.replace(tmp, path)
        except OSError:
            pass
    return value
