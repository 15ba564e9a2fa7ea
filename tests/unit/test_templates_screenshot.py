"""An HTML reply rendered by headless Chromium: the screenshot is an artefact of the test run.

Needs Debian's ``chromium`` (scripts/install-test-deps.sh installs it). Without it the test is
skipped locally and fails in CI (environment variable CI set). The PNGs go to test-artifacts/.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from guard.message import parse
from guard.paths import shipped
from guard.render import Identity, Renderer, build_reply
from guard.settings import load_settings
from guard.verdict import Reason, Verdict

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
WIDTH, HEIGHT = 900, 1200


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI): run scripts/install-test-deps.sh")
    pytest.skip("chromium is not installed (apt-get install chromium, or scripts/install-test-deps.sh)")


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of raw pixel bytes) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, [], 0
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
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
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


def _reply_html(lang: str) -> str:
    settings = load_settings()
    ident = Identity.from_settings(settings)
    inner = (b"From: Conference Committee <committee@gmail.com>\r\nSubject: Hotel reservation for MFML 2026\r\n"
             b"\r\nSend your card number today.\r\n")
    raw = (b"From: Pat Participant <pat@example.org>\r\nTo: events@crm.cat\r\nSubject: Fwd: Hotel reservation\r\n"
           b"Message-ID: <rep@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nIs this real? <script>alert(1)</script>\r\n--b\r\n"
           b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--b--\r\n")
    verdict = Verdict("report", 0.0, language=lang, inner=Verdict("scam", 9.0, reasons=(
        Reason("CARD_DETAILS_REQUEST", "Asks for card details", 4.0, ("scam", "payment")),
        Reason("HOUSING_OFFICIAL_CLAIM", "Official housing claim", 3.0, ("scam", "housing")))))
    r = build_reply(Renderer(shipped("templates")), "report_verdict", msg=parse(raw), verdict=verdict, ident=ident,
                    now=datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc), message_id="<shot@crm.cat>")
    m = email.message_from_bytes(r.raw, policy=email.policy.default)
    return m.get_body(("html",)).get_content()


@pytest.mark.parametrize("lang", ["en", "es", "ca"])
def test_html_reply_renders_in_headless_chromium(lang):
    chromium = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    html_file = ARTIFACTS / f"report_verdict.{lang}.html"
    png = ARTIFACTS / f"report_verdict.{lang}.png"
    html = _reply_html(lang)
    assert "<script>" not in html
    html_file.write_text(html, encoding="utf-8")
    if png.exists():
        png.unlink()
    with tempfile.TemporaryDirectory(prefix="guard-chromium-") as profile:
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={WIDTH},{HEIGHT}", html_file.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )
    assert png.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    width, height, rows = decode_png(png.read_bytes())
    assert WIDTH <= width <= 2 * WIDTH and HEIGHT <= height <= 2 * HEIGHT, (width, height)
    # not a blank page: many colours (text, the red warning bar, the grey facts box) and plenty of ink
    pixels = [row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 12)]
    background = max(set(pixels), key=pixels.count)
    colours = set(pixels)
    ink = sum(1 for p in pixels if p != background) / len(pixels)
    assert len(colours) >= 16, len(colours)
    assert ink > 0.01, ink
    # the warning bar's red (#c0392b) is on the page
    assert any(abs(p[0] - 0xC0) < 24 and abs(p[1] - 0x39) < 24 and abs(p[2] - 0x2B) < 24
               for row in rows for p in (row[i:i + 3] for i in range(0, len(row), 3))), "no red warning bar"
