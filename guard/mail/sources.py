"""Reading messages from files for ``guard classify`` and training: .eml, directories, mbox, stdin."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from guard.pickling import fast_pickle

MBOX_SUFFIXES = (".mbox", ".mbx")
# an mbox separator: "From " + sender + a ctime-style date
_FROM_LINE = re.compile(rb"^From \S+ +\w{3} \w{3} +\d+ [\d:]+ \d{4}", re.M)


@fast_pickle
@dataclass(frozen=True, slots=True)
class Source:
    name: str  # the path as given, or path#N for the N-th message of an mbox
    raw: bytes | None
    error: str | None = None


def _is_mbox(path: Path, head: bytes) -> bool:
    if path.suffix.lower() in MBOX_SUFFIXES:
        return True
    # one "From " line at the top is a single message with its envelope line kept
    return head.startswith(b"From ") and len(_FROM_LINE.findall(head)) > 1


def split_mbox(data: bytes) -> list[bytes]:
    starts = [m.start() for m in _FROM_LINE.finditer(data)]
    if not starts:
        return [data] if data.strip() else []
    out = []
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        chunk = data[s:end]
        nl = chunk.find(b"\n")
        body = chunk[nl + 1 :] if nl >= 0 else b""
        # undo mbox ">From " quoting
        body = re.sub(rb"(?m)^>(>*From )", rb"\1", body)
        out.append(body)
    return out


def _from_file(path: Path, name: str) -> Iterator[Source]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield Source(name, None, f"cannot read: {exc.strerror or exc}")
        return
    if _is_mbox(path, data[:1_000_000] if path.suffix.lower() not in MBOX_SUFFIXES else data):
        for i, msg in enumerate(split_mbox(data), start=1):
            yield Source(f"{name}#{i}", msg)
    else:
        yield Source(name, data)


def _wanted(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    suffix = path.suffix.lower()
    if suffix in (".eml", ".msg") or suffix in MBOX_SUFFIXES:
        return True
    # Maildir: files under cur/ or new/ have no suffix of their own
    return path.parent.name in ("cur", "new")


def iter_sources(paths: list[str]) -> Iterator[Source]:
    for given in paths:
        if given == "-":
            yield from _stdin()
            continue
        path = Path(given)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for fname in sorted(files):
                    p = Path(root) / fname
                    if _wanted(p):
                        yield from _from_file(p, str(p))
        elif path.exists():
            yield from _from_file(path, given)
        else:
            yield Source(given, None, "no such file or directory")


def _stdin() -> Iterator[Source]:
    data = sys.stdin.buffer.read()
    if data.startswith(b"From ") and len(_FROM_LINE.findall(data)) > 1:
        for i, msg in enumerate(split_mbox(data), start=1):
            yield Source(f"-#{i}", msg)
    else:
        yield Source("-", data)
