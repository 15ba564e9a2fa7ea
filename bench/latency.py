#!/usr/bin/env python3
"""Arrival-to-reply latency of `guard run` over IMAP IDLE, against the real test mail stack.

    sudo python3 bench/latency.py [--count 200] [--interval 0.3] [--test-rules]

Starts a private stack (scripts/mailstack.sh: Dovecot + the SMTP test server) on free loopback
ports, starts `guard run` on it, then sends N inquiries from N different senders, one every
INTERVAL seconds. For each it measures, from the SMTP server's own record (sink file names carry
time.time_ns() taken when a message was accepted, after LMTP delivery into the inbox):

    arrival -> acknowledgement to the participant accepted by SMTP
    arrival -> forward to the coordinator accepted by SMTP

and prints p50 / p90 / p99 / max. Dovecot itself waits ~0.5 s before IDLE reports new mail
(NOTIFY_DELAY_MSECS), which is included. By default guard uses the shipped rules (and model, if
one is shipped); --test-rules uses the integration tests' small fixed rule set instead.
Needs root (Dovecot stores mail as user 'mail').
"""

from __future__ import annotations

import argparse
import os
import smtplib
import statistics
import sys
import time
from pathlib import Path

from _stack import COORDINATOR, EVENTS, Stack, received_by_mx  # noqa: E402 - bench/ is on sys.path when run as a script


def inquiry(i: int) -> bytes:
    return (received_by_mx(f"b{i}@example.net") + f"From: Participant {i} <b{i}@example.net>\r\nTo: {EVENTS}\r\n"
            f"Subject: Invitation letter for my visa ({i})\r\nDate: Mon, 05 Jan 2026 10:00:00 +0100\r\n"
            f"Message-ID: <bench.{i}.{time.time_ns()}@example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            "Hello,\r\n\r\ncould you send me an invitation letter for my visa application?\r\n\r\n"
            f"Thank you,\r\nParticipant {i}\r\n").encode()


def sink(mail_dir: Path) -> list[tuple[int, str, list[str], bytes]]:
    out = []
    d = mail_dir / "smtp-sink"
    for p in sorted(d.glob("*.eml")):
        if p.name.startswith("."):
            continue
        ns = int(p.name.split("-", 1)[0])
        blob = p.read_bytes()
        env_from, tos, pos = "", [], 0
        while True:
            end = blob.find(b"\r\n", pos)
            line = blob[pos:end]
            if line.startswith(b"X-Envelope-From: "):
                env_from = line[17:].decode()
                env_from = "" if env_from == "<>" else env_from
            elif line.startswith(b"X-Envelope-To: "):
                tos.append(line[15:].decode())
            else:
                break
            pos = end + 2
        out.append((ns, env_from, tos, blob[pos:]))
    return out


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--count", dest="n", type=int, default=200, help="messages (default 200)")
    ap.add_argument("--interval", type=float, default=0.3, help="seconds between messages (default 0.3)")
    ap.add_argument("--test-rules", action="store_true", help="use tests/integration/daemon_rules")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/latency.py needs root (the private Dovecot stores mail as user 'mail')", file=sys.stderr)
        return 2

    with Stack(test_rules=args.test_rules, keep=args.keep) as st:
        st.start_guard()

        print(f"sending {args.n} inquiries, one every {args.interval:g} s ...", file=sys.stderr)
        with smtplib.SMTP("127.0.0.1", st.smtp_port, timeout=30) as s:
            for i in range(args.n):
                t = time.monotonic()
                s.sendmail(f"b{i}@example.net", [EVENTS], inquiry(i))
                time.sleep(max(0.0, args.interval - (time.monotonic() - t)))
        deadline = time.monotonic() + 60
        while True:
            entries = sink(st.mail_dir)
            acks = {tos[0]: ns for ns, frm, tos, _ in entries if frm == "" and tos and tos[0].startswith("b")}
            if len(acks) >= args.n or time.monotonic() > deadline:
                break
            time.sleep(0.2)

        arrival, forwards = {}, {}
        for ns, frm, tos, raw in entries:
            if tos == [EVENTS] and frm.startswith("b"):
                arrival[frm] = ns
            elif tos == [COORDINATOR]:
                head = raw.split(b"\r\n\r\n", 1)[0]
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"reply-to:"):
                        addr = line.decode().split("<")[-1].rstrip(">").strip()
                        forwards[addr] = ns
        ack_lat = [(acks[a] - arrival[a]) / 1e9 for a in arrival if a in acks]
        fwd_lat = [(forwards[a] - arrival[a]) / 1e9 for a in arrival if a in forwards]
        missing = len(arrival) - len(ack_lat)
        print(f"\nguard arrival-to-reply latency over IMAP IDLE ({len(ack_lat)} messages, "
              f"{'test' if args.test_rules else 'shipped'} rules, one every {args.interval:g} s)")
        for name, lat in (("acknowledgement to participant", ack_lat), ("forward to coordinator", fwd_lat)):
            if not lat:
                print(f"  {name}: no data")
                continue
            print(f"  {name:32s} min {min(lat):.3f} s   p50 {pct(lat, 50):.3f} s   p90 {pct(lat, 90):.3f} s   "
                  f"p99 {pct(lat, 99):.3f} s   max {max(lat):.3f} s   mean {statistics.mean(lat):.3f} s")
        if ack_lat:
            ok = pct(ack_lat, 50) < 1.0 and pct(ack_lat, 99) < 3.0
            print(f"  goals p50 < 1 s and p99 < 3 s (acknowledgement): {'met' if ok else 'NOT met'}")
        if missing:
            print(f"  {missing} message(s) got no acknowledgement within 60 s")
        return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
