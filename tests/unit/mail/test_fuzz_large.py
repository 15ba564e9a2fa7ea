"""Huge and deeply split messages go through parse, classify, decide and render in bounded memory and time.

Each case runs in a fresh subprocess (so the peak RSS is its own, from ``resource.getrusage``):
the message is built first, the peak RSS taken as the baseline, then the whole message goes through
parse and classify, and the daemon's view of it (the first ``imap.max_message_bytes``, as its FETCH
reads) through parse, classify, decide and render (the chosen plan and a forward with the original
attached), with the shipped rules and model. Bounds are loose (a shared 2-core machine): a
peak RSS increase under 300 MB and under 30 s of wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

SCRIPT = r'''
import base64, json, os, resource, sys, time
from datetime import datetime, timezone

from guard.classification.assemble import build_classifier
from guard.daemon.service import build_env, load_policy_and_templates
from guard.mail.message import parse
from guard.classification.model_loader import load_default_model
from guard.respond.prepare import prepare
from guard.respond.policy import decide
from guard.respond.reply_gate import ReplyHistory
from guard.settings import load_settings

settings = load_settings()
try:
    model = load_default_model(settings)
except Exception:
    model = None
classifier = build_classifier(settings, model=model)
policy, renderer = load_policy_and_templates(settings)
env = build_env(settings, renderer, "live")
now = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)

head = ("From: Pat <pat@example.net>\r\nTo: events@crm.cat\r\nSubject: Hotel for the workshop - rooms left\r\n"
        "Message-ID: <big.1@example.net>\r\nMIME-Version: 1.0\r\n")
case = sys.argv[1]
if case == "50mb":
    text = ("Dear participant, only 7 rooms left, a credit card is required. Visit https://hotel.example/book "
            "and pay 4111 1111 1111 1111.\r\n") * 10_000          # ~1.1 MB of text
    blob = base64.encodebytes(os.urandom(36 * 1024 * 1024)).replace(b"\n", b"\r\n")  # ~49 MB of base64
    raw = (head + 'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
           + text + '\r\n--B\r\nContent-Type: application/pdf; name="invoice.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           ).encode() + blob + b"\r\n--B--\r\n"
elif case == "50mb-text":
    line = "Only 7 rooms left at the conference rate, a credit card is required to hold the room block. " * 4
    raw = (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode() + ((line + "\r\n") * (50 * 1024 * 1024 // (len(line) + 2))).encode()
elif case == "10k-parts":
    parts = []
    for i in range(10_000):
        if i % 3 == 0:
            parts.append(f'--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPart {i}: is there a room left? card 4111 1111 1111 1111\r\n')
        elif i % 3 == 1:
            parts.append(f'--B\r\nContent-Type: text/html\r\n\r\n<p>Part {i} <a href="https://x{i}.example/">book</a></p>\r\n')
        else:
            parts.append(f'--B\r\nContent-Type: message/rfc822\r\n\r\nFrom: s{i}@travellerpoint.example\r\nSubject: Room {i}\r\n\r\nOnly rooms left.\r\n')
    raw = (head + 'Content-Type: multipart/mixed; boundary="B"\r\n\r\n' + "".join(parts) + "--B--\r\n").encode()
else:
    raise SystemExit(case)

from guard.settings import ImapSettings

limit = ImapSettings.model_fields["max_message_bytes"].default  # what the daemon's FETCH reads at most
size = len(raw)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
# 1. the whole message through parse and classify (their own bounds)
classifier.classify(parse(raw))
# 2. the daemon's path: FETCH BODY.PEEK[]<0.limit>, then parse, classify, decide and render the chosen
#    plan and the heaviest one (a forward to the coordinator with the original attached, plus a reply)
raw = raw[:limit]
msg = parse(raw)
verdict = classifier.classify(msg)
sent = 0
heavy = next(r.plan for r in policy.rows if r.id == "inquiry")
for plan in {decide(policy, verdict), heavy}:
    d = prepare(raw, msg, verdict, plan, env=env, now=now, arrived=now,
                histories={a.template: ReplyHistory() for a in plan.sends if a.do == "reply"},
                breaker_alert_due=True, token="0123456789abcdef")
    sent += len(d.outgoing)
wall = time.monotonic() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"case": case, "size_mb": round(size / 2**20, 1), "category": verdict.category,
                  "rendered": sent, "wall_s": round(wall, 2), "rss_base_mb": round(base / 1024, 1),
                  "rss_peak_mb": round(peak / 1024, 1), "rss_delta_mb": round((peak - base) / 1024, 1)}))
'''


FULL = os.environ.get("GUARD_FULL", "") not in ("", "0")


@pytest.mark.parametrize("case", ["50mb", "10k-parts", *(["50mb-text"] if FULL else [])])
def test_huge_message_bounded_memory_and_time(case):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, case], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(r)
    assert r["size_mb"] >= (49 if case.startswith("50mb") else 0.5)
    assert r["rss_delta_mb"] < 300, r
    assert r["wall_s"] < 30, r
