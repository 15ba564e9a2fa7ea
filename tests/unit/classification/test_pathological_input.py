"""Bounded work per message: long pathological lines and deep HTML through parse and classify.

Every pattern that reads message text must be linear. These inputs made the inline-forward header
pattern backtrack (a 4 KB line of spaces cost 55 s) and the HTML parser crawl on deep nesting
(a 1.8 MB part cost 385 s). The limit below is a bound on work, not a speed target: on this machine
each of these messages takes milliseconds, and anything super-linear takes minutes.
"""

from __future__ import annotations

import base64
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from guard.mail.message import parse

LIMIT_SECONDS = 5.0

_RUNS = st.sampled_from([" ", "\t", "-", "_", "=", ">", "*", ":", ".", "a", "@", "<", "/", "0", "é", "\u00a0", " :"])
_LINE = st.builds(lambda parts: "".join(ch * n for ch, n in parts),
                  st.lists(st.tuples(_RUNS, st.integers(1, 40_000)), min_size=1, max_size=4))


def _timed(raw: bytes, classifier) -> float:
    t0 = time.process_time()
    msg = parse(raw)
    classifier.classify(msg)
    return time.process_time() - t0


def _plain(line: str, lines: int) -> bytes:
    body = "\n".join([line] * lines)
    return ("From: a@b.example\nTo: events@crm.cat\nSubject: x\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: base64\n\n").encode() + base64.encodebytes(body.encode())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(line=_LINE, lines=st.integers(1, 8), label=st.sampled_from(["", "From:", "De :", "> ", "Subject: "]))
def test_long_pathological_lines_cost_bounded_time(classifier, line, lines, label):
    raw = _plain(label + line, lines)
    assert _timed(raw, classifier) < LIMIT_SECONDS


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tag=st.sampled_from(["div", "blockquote", "p", "table", "span", "b", "li"]), depth=st.integers(1_000, 150_000))
def test_deep_html_costs_bounded_time(classifier, tag, depth):
    html = f"<{tag}>" * depth + "Please send your card number" + f"</{tag}>" * depth
    raw = (b"From: a@b.example\nTo: events@crm.cat\nSubject: x\nContent-Type: text/html; charset=utf-8\n\n"
           + html.encode())
    assert _timed(raw, classifier) < LIMIT_SECONDS


def test_the_reported_message_costs_bounded_time(classifier):
    # the message: a 68 KB base64 body of long lines of spaces
    raw = _plain(" " * 4096 + "x", 12)
    assert len(raw) > 60_000
    assert _timed(raw, classifier) < LIMIT_SECONDS
