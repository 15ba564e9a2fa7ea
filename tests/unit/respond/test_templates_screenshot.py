"""An HTML reply rendered by headless Chromium: the screenshot is an artefact of the test run.

Needs Debian's ``chromium`` (scripts/install-test-deps.sh installs it). Without it the test is
skipped locally and fails in CI (environment variable CI set). The PNGs go to test-artifacts/.
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone

import pytest
from screenshots import assert_not_blank, has_colour, screenshot


from guard.mail.message import parse
from guard.paths import shipped
from guard.respond.render import Identity, Renderer, build_reply
from guard.settings import load_settings
from guard.classification.verdict import Reason, Verdict

WIDTH, HEIGHT = 900, 1200


def _reply_html(lang: str) -> str:
    settings = load_settings()
    ident = Identity.from_settings(settings)
    inner = (b"From: Conference Committee <committee@gmail.com>\r\nSubject: Hotel reservation for MFML 2026\r\n"
             b"\r\nSend your card number today.\r\n")
    raw = (b"From: Pat Participant <pat@example.org>\r\nTo: events@crm.cat\r\nSubject: Fwd: Hotel reservation\r\n"
           b"Message-ID: <rep@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nIs this real? <script>alert(1)</script>\r\n--b\r\n"
           b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--b--\r\n")
    verdict = Verdict("report", 0.0, inner=Verdict("scam", 9.0, reasons=(
        Reason("CARD_DETAILS_REQUEST", "Asks for card details", 4.0, ("scam", "payment")),
        Reason("HOUSING_OFFICIAL_CLAIM", "Official housing claim", 3.0, ("scam", "housing")))))
    r = build_reply(Renderer(shipped("templates")), "report_verdict", msg=parse(raw), verdict=verdict, ident=ident,
                    now=datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc), message_id="<shot@crm.cat>",
                    language=lang)
    m = email.message_from_bytes(r.raw, policy=email.policy.default)
    return m.get_body(("html",)).get_content()


@pytest.mark.parametrize("lang", ["en", "es", "ca", "fr", "de", "it", "pt"])
def test_html_reply_renders_in_headless_chromium(lang):
    html = _reply_html(lang)
    assert "<script>" not in html
    width, height, rows = screenshot(html, f"report_verdict.{lang}", WIDTH, HEIGHT)
    assert WIDTH <= width <= 2 * WIDTH and HEIGHT <= height <= 2 * HEIGHT, (width, height)
    assert_not_blank(rows)  # text, the red warning bar, the grey facts box
    assert has_colour(rows, (0xC0, 0x39, 0x2B), step=1), "no red warning bar"
