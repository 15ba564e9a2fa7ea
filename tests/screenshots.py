"""Headless-Chromium screenshots for the HTML tests, and a small PNG reader to check them.

Needs Debian's ``chromium`` (scripts/install-test-deps.sh installs it). Without it a test is
skipped locally and fails in CI (environment variable CI set). Artefacts go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI): run scripts/install-test-deps.sh")
    pytest.skip("chromium is not installed (apt-get install chromium, or scripts/install-test-deps.sh)")


def screenshot(html: str, name: str, width: int, height: int) -> tuple[int, int, list[bytes]]:
    """Write ``html`` to test-artifacts/NAME.html, shoot NAME.png, return (width, height, RGB rows)."""
    exe = chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    html_file, png = ARTIFACTS / f"{name}.html", ARTIFACTS / f"{name}.png"
    html_file.write_text(html, encoding="utf-8")
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="guard-chromium-") as profile:
        proc = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={width},{height}", html_file.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return decode_png(png.read_bytes())


def assert_not_blank(rows: list[bytes], *, min_colours: int = 16, min_ink: float = 0.01) -> None:
    """Many colours and enough non-background pixels: text, boxes and tables were drawn."""
    pixels = [row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 12)]
    background = max(set(pixels), key=pixels.count)
    ink = sum(p != background for p in pixels) / len(pixels)
    assert len(set(pixels)) >= min_colours and ink > min_ink, (len(set(pixels)), ink)


def has_colour(rows: list[bytes], rgb: tuple[int, int, int], tol: int = 24, step: int = 2) -> bool:
    return any(all(abs(x - y) <= tol for x, y in zip(row[i:i + 3], rgb))
               for row in rows[::step] for i in range(0, len(row), 3 * step))


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, RGB rows) of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, bpp = 8, [], 0, 0, 3
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(v for j, v in enumerate(line) if j % 4 != 3))
        prev = line
    return width, height, rows
