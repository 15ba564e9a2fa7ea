#!/usr/bin/env python3
"""Time for `guard run --once` to work through a 10,000-message backlog, against the real test mail stack.

    sudo python3 bench/backlog.py [--count 10000 | --count 1000,3000,10000] [--test-rules] [--first-start] [--out FILE]

Starts a private stack (Dovecot + the SMTP test server), runs guard once on the empty inbox (its
first start), then appends COUNT mixed messages into the inbox with IMAP APPEND over a few parallel
connections (inquiries, scams, reports, bounces, out-of-office in turn, every sender different, so
the inquiries and reports really get their replies and forwards through SMTP), and times
`guard run --once` (a fresh process: start-up, model loading, IMAP, classification, journal, SMTP,
moves). Prints the total time, messages per second, and wall and guard CPU (its parse worker
included) per message; with several sizes, each in a fresh stack, whether the cost per message
stays flat. Goal: 10,000 in under 30 s.

--first-start appends the backlog *before* guard's first start instead: that mail is filed and
routed but never answered (the reply gate's backlog rule), which is the realistic first day.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import time

from _stack import Stack, mixed_message


def append_bulk(st: Stack, count: int, connections: int = 4) -> float:
    t0 = time.monotonic()
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            c = st.imap()
            for i in range(k, count, connections):
                c.append("INBOX", mixed_message(i, "backlog"))
            c.logout()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.monotonic() - t0


def one(count: int, args) -> dict:
    """A fresh stack, COUNT messages appended, one timed `guard run --once`."""
    with Stack(test_rules=args.test_rules, keep=args.keep) as st:
        startup = startup_cpu = None
        if not args.first_start:
            startup = st.run_once()  # guard's first start on an empty inbox: start-up, connect, nothing to do
            startup_cpu = st.last_cpu
        t_append = append_bulk(st, count)
        c = st.imap()
        n_inbox = c.select_folder("INBOX")[b"EXISTS"]
        c.logout()
        print(f"appended {n_inbox} messages in {t_append:.1f} s ({n_inbox / t_append:.0f} msg/s)", file=sys.stderr)
        sink0 = st.sink_count()
        load_before = [round(x, 2) for x in os.getloadavg()]
        total = st.run_once()
        cpu = st.last_cpu
        breakdown = st.last_breakdown
        c = st.imap()
        left = c.select_folder("INBOX")[b"EXISTS"]
        c.logout()
        sent = st.sink_count() - sink0
        db = sqlite3.connect(st.journal)
        states = dict(db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall())
        db.close()
    done = states.get("done", 0)
    return {"count": n_inbox, "total_s": total, "guard_cpu_s": cpu, "done": done, "left": left, "sent": sent,
            "states": states, "empty_run_s": startup, "empty_run_cpu_s": startup_cpu, "load_before": load_before,
            "cpu_breakdown_s": breakdown}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", default="10000",
                    help="messages, or several sizes separated by commas, each in a fresh stack (default 10000; "
                         "1000,3000,10000 shows whether the cost per message stays flat)")
    ap.add_argument("--test-rules", action="store_true", help="use tests/integration/daemon_rules")
    ap.add_argument("--first-start", action="store_true", help="the backlog is there before guard's first start")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    counts = [int(x) for x in str(args.count).split(",") if x.strip()]
    results = []
    for count in counts:
        results.append(one(count, args))
        r = results[-1]
        print(f"  {r['count']:>6} messages: {r['total_s']:.1f} s, {1000 * r['total_s'] / r['count']:.2f} ms/msg wall, "
              f"guard CPU {1000 * r['guard_cpu_s'] / r['count']:.2f} ms/msg (load average before "
              f"{r['load_before']})", file=sys.stderr)
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"\nguard run --once over a backlog ({'test' if args.test_rules else 'shipped'} rules, "
          f"{'before the first start: no replies' if args.first_start else 'after the first start: replies sent'}; "
          f"load average at the end {load})")
    print(f"  {'messages':>8} {'total s':>8} {'msg/s':>7} {'wall ms/msg':>12} {'CPU ms/msg':>11} {'empty run s':>12}"
          f" {'SMTP sends':>10}  journal")
    ok = True
    for r in results:
        n = r["count"]
        print(f"  {n:>8} {r['total_s']:>8.1f} {r['done'] / r['total_s']:>7.0f} {1000 * r['total_s'] / n:>12.2f} "
              f"{1000 * r['guard_cpu_s'] / n:>11.2f} {r['empty_run_s'] if r['empty_run_s'] is None else round(r['empty_run_s'], 1)!s:>12}"
              f" {r['sent']:>10}  {r['states']}")
        ok = ok and r["done"] >= n and r["left"] == 0
    print(f"  CPU ms per message while guard ran (sampled from /proc every 50 ms; machine busy: the share of all "
          f"{os.cpu_count()} cores' time used by anything):")
    for r in results:
        b, n = r["cpu_breakdown_s"], r["count"]
        per = {k: 1000 * b.get(k, 0.0) / n for k in ("guard_main", "guard_worker", "smtp_server", "dovecot")}
        other = 1000 * b["machine_busy"] / n - sum(per.values())
        print(f"  {n:>8}  guard main {per['guard_main']:.2f} (system {1000 * b.get('guard_main_system', 0) / n:.2f}), "
              f"worker {per['guard_worker']:.2f}, SMTP server {per['smtp_server']:.2f}, Dovecot {per['dovecot']:.2f}, "
              f"anything else {other:.2f} (kernel threads, other jobs); "
              f"machine busy {100 * b['machine_busy'] / max(b['machine_capacity'], 1e-9):.0f} %")
    big = [r for r in results if r["count"] >= 10_000]
    if big:
        t = big[-1]["total_s"]
        print(f"  goal 10,000 in under 30 s: {'met' if t < 30 else 'NOT met'} ({t:.1f} s)")
    if len(results) > 1:
        per = [1000 * r["guard_cpu_s"] / r["count"] for r in results]
        print(f"  CPU per message from {results[0]['count']} to {results[-1]['count']} messages: "
              f"{per[0]:.2f} -> {per[-1]:.2f} ms ({per[-1] / per[0]:.2f}x)")
        # the server's share grows with the inbox (a Dovecot maildir MOVE costs more the bigger the
        # inbox): shown apart, and the wall time per message beside it
        wall = [1000 * r["total_s"] / r["count"] for r in results]
        dov = [1000 * r["cpu_breakdown_s"].get("dovecot", 0.0) / r["count"] for r in results]
        print(f"  wall per message {wall[0]:.2f} -> {wall[-1]:.2f} ms ({wall[-1] / wall[0]:.2f}x), Dovecot CPU per "
              f"message {dov[0]:.2f} -> {dov[-1]:.2f} ms ({dov[-1] / max(dov[0], 1e-9):.2f}x)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"results": results, "loadavg_end": load, "args": vars(args)}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
