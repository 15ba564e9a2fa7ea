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
    kept = read_json(path)
    if kept is not None:
        return kept
    value = build()
    if path is not None:
        try:
            write_json(path, value)
        except (TypeError, ValueError):
            pass
    return value


# -- validated values kept as JSON -----------------------------------------------------------------
#
# A validated pydantic model (settings, rule specifications) is kept as the exact values validation
# gave, each model with its class and its set fields, and rebuilt with ``model_construct``: no
# validation, the very same values (see ``identical``). Only plain values are kept: str, int, float,
# bool, None, lists, tuples, dicts with str keys, paths, dates and times; anything else (a secret, an
# extra or private attribute) makes ``freeze`` raise TypeError, and the caller keeps no entry.


def freeze(value) -> object:
    """``value`` as JSON-ready data that :func:`thaw` turns back into an identical value (TypeError if not)."""
    import datetime as dt  # noqa: PLC0415

    if value is None or type(value) in (str, int, float, bool):
        return value
    if type(value) is list:
        return [freeze(v) for v in value]
    if type(value) is tuple:
        return {"$tuple": [freeze(v) for v in value]}
    if type(value) is dict:
        if not all(type(k) is str for k in value):
            raise TypeError("dict keys must be str")
        return {"$dict": {k: freeze(v) for k, v in value.items()}}
    if isinstance(value, Path) and type(value) is type(Path()):
        return {"$path": str(value)}
    if type(value) is dt.date:
        return {"$date": value.isoformat()}
    if type(value) is dt.time and value.tzinfo is None:
        return {"$time": value.isoformat()}
    fields = getattr(type(value), "__pydantic_fields__", None)
    if fields is not None and getattr(value, "__pydantic_extra__", None) is None \
            and getattr(value, "__pydantic_private__", None) is None and set(value.__dict__) == set(fields):
        return {"$model": type(value).__name__, "fields": {k: freeze(v) for k, v in value.__dict__.items()},
                "set": sorted(value.__pydantic_fields_set__)}
    raise TypeError(f"cannot keep a {type(value).__name__}")


def thaw(data, classes: dict[str, type]) -> object:
    """The value :func:`freeze` gave ``data`` for; ``classes``: the model classes by name."""
    if type(data) is list:  # scalars inline: long lists of phrases are most of a rule file
        return [v if type(v) not in _NESTED else thaw(v, classes) for v in data]
    if type(data) is not dict:
        return data
    if "$model" in data:
        cls = classes[data["$model"]]
        fields = {k: v if type(v) not in _NESTED else thaw(v, classes) for k, v in data["fields"].items()}
        return cls.model_construct(set(data["set"]), **fields)
    if "$dict" in data:
        return {k: v if type(v) not in _NESTED else thaw(v, classes) for k, v in data["$dict"].items()}
    if "$tuple" in data:
        return tuple(thaw(data["$tuple"], classes))
    import datetime as dt  # noqa: PLC0415

    if "$path" in data:
        return Path(data["$path"])
    if "$date" in data:
        return dt.date.fromisoformat(data["$date"])
    if "$time" in data:
        return dt.time.fromisoformat(data["$time"])
    raise ValueError(f"unknown entry {sorted(data)}")


_NESTED = (list, dict)


def identical(a, b) -> bool:
    """Same types and values all the way down (``2 == 2.0`` is not enough), models with the same set fields."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    fields = getattr(type(a), "__pydantic_fields__", None)
    if fields is not None:
        return (a.__pydantic_fields_set__ == b.__pydantic_fields_set__ and list(a.__dict__) == list(b.__dict__)
                and getattr(a, "__pydantic_extra__", None) == getattr(b, "__pydantic_extra__", None)
                and getattr(a, "__pydantic_private__", None) == getattr(b, "__pydantic_private__", None)
                and all(identical(a.__dict__[k], b.__dict__[k]) for k in a.__dict__))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


def code_key(*files: str | os.PathLike) -> str:
    """Name, size and time of each file (the code whose validation a cached value stands for)."""
    parts = []
    for f in files:
        try:
            st = os.stat(f)
            parts.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{f}|absent")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def read_json(path: Path | None):
    """The JSON kept at ``path``, or None (no cache, missing or damaged)."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path | None, value) -> None:
    """Keep ``value`` at ``path`` (written beside it, then renamed); an OSError only means no entry."""
    import tempfile  # noqa: PLC0415 - only when something is written (start-up time)

    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(exc, OSError):
            raise
