"""The HTML digest rendered by headless Chromium: the screenshot is an artefact of the test run.

Needs Debian's ``chromium`` (scripts/install-test-deps.sh installs it). Without it the test is
skipped locally and fails in CI (environment variable CI set). The PNG and the HTML go to
test-artifacts/digest.png and digest.html.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from test_digest import RECORDS, T

from guard import digest as dg
from guard.digest_send import render_digest
from guard.paths import shipped
from guard.render import Renderer
from guard.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
WIDTH, HEIGHT = 1100, 1500


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI): run scripts/install-test-deps.sh")
    pytest.skip("chromium is not installed (apt-get install chromium, or scripts/install-test-deps.sh)")


def png_rows(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, RGB rows) of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
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


def test_html_digest_renders_in_headless_chromium():
    exe = chromium()
    data = dg.build(RECORDS, dg.Period(T - timedelta(days=1), T + timedelta(days=1)))
    r = render_digest(load_settings(), Renderer(shipped("templates")), data, now=T + timedelta(days=1),
                      message_id="<shot@crm.cat>")
    ARTIFACTS.mkdir(exist_ok=True)
    html_file, png = ARTIFACTS / "digest.html", ARTIFACTS / "digest.png"
    html_file.write_text(r.html, encoding="utf-8")
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="guard-chromium-") as profile:
        proc = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={WIDTH},{HEIGHT}", html_file.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    width, height, rows = png_rows(png.read_bytes())
    assert WIDTH <= width <= 2 * WIDTH and HEIGHT <= height <= 2 * HEIGHT, (width, height)
    pixels = [row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 12)]
    background = max(set(pixels), key=pixels.count)
    ink = sum(p != background for p in pixels) / len(pixels)
    assert len(set(pixels)) >= 16 and ink > 0.02, (len(set(pixels)), ink)  # not blank: text, tables, boxes

    def near(p, rgb, tol=12):
        return all(abs(x - y) <= tol for x, y in zip(p, rgb))

    everything = [row[i:i + 3] for row in rows[::2] for i in range(0, len(row), 6)]
    assert any(near(p, (0xF8, 0xD7, 0xDA)) for p in everything), "no pink 'urgent' heading"
    assert any(near(p, (0xFF, 0xF3, 0xCD)) for p in everything), "no yellow advisory box"
