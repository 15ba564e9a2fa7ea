"""The HTML digest rendered by headless Chromium: the screenshot is an artefact of the test run.

Needs Debian's ``chromium`` (scripts/install-test-deps.sh installs it). Without it the test is
skipped locally and fails in CI (environment variable CI set). The PNG and the HTML go to
test-artifacts/digest.png and digest.html.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from screenshots import assert_not_blank, has_colour, screenshot
from test_digest import RECORDS, T

from guard.digest import build as dg
from guard.digest.send import render_digest
from guard.paths import shipped
from guard.respond.render import Renderer
from guard.settings import load_settings

WIDTH, HEIGHT = 1100, 1500


@pytest.mark.parametrize("lang", ["en", "ca", "es"])
def test_html_digest_renders_in_headless_chromium(lang):
    data = dg.build(RECORDS, dg.Period(T - timedelta(days=1), T + timedelta(days=1)))
    r = render_digest(load_settings(), Renderer(shipped("templates"), coordinator_language=lang), data,
                      now=T + timedelta(days=1), message_id="<shot@crm.cat>")
    assert f'<html lang="{lang}">' in r.html
    width, height, rows = screenshot(r.html, "digest" if lang == "en" else f"digest.{lang}", WIDTH, HEIGHT)
    assert WIDTH <= width <= 2 * WIDTH and HEIGHT <= height <= 2 * HEIGHT, (width, height)
    assert_not_blank(rows, min_ink=0.02)  # text, tables, boxes
    assert has_colour(rows, (0xF8, 0xD7, 0xDA), tol=12), "no pink 'urgent' heading"
    assert has_colour(rows, (0xFF, 0xF3, 0xCD), tol=12), "no yellow advisory box"
