#!/usr/bin/env python3
"""Time for `guard run --once` to work through a 10,000-message backlog, against the real test mail stack.

    sudo python3 bench/backlog.py [--count 10000] [--test-rules] [--first-start]

Starts a private stack (Dovecot + the SMTP test server), runs guard once on the empty inbox (its
first start), then appends COUNT mixed messages into the inbox with IMAP APPEND over a few parallel
connections (inquiries, scams, reports, bounces, out-of-office in turn, every sender different, so
the inquiries and reports really get their replies and forwards through SMTP), and times
`guard run --once` (a fresh process: start-up, model loading, IMAP, classification, journal, SMTP,
moves). Prints the total time and messages per second. Goal: 10,000 in under 60 s.

--first-start appends the backlog *before* guard's first start instead: that mail is filed and
routed but never answered (the reply gate's backlog rule), which is the realistic first day.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10_000, help="messages (default 10000)")
    ap.add_argument("--test-rules", action="store_true", help="use tests/integration/daemon_rules")
    ap.add_argument("--first-start", action="store_true", help="the backlog is there before guard's first start")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    with Stack(test_rules=args.test_rules, keep=args.keep) as st:
        if not args.first_start:
            st.run_once()
        t_append = append_bulk(st, args.count)
        c = st.imap()
        n_inbox = c.select_folder("INBOX")[b"EXISTS"]
        c.logout()
        print(f"appended {n_inbox} messages in {t_append:.1f} s ({n_inbox / t_append:.0f} msg/s)", file=sys.stderr)
        sink0 = st.sink_count()
        total = st.run_once()
        c = st.imap()
        left = c.select_folder("INBOX")[b"EXISTS"]
        c.logout()
        sent = st.sink_count() - sink0
        db = sqlite3.connect(st.journal)
        states = dict(db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall())
        db.close()
        done = states.get("done", 0)
        log = st.log.read_text(errors="replace")
        startup = None
        for line in log.splitlines():
            if "connected to" in line:
                startup = line  # the last connect is the timed run's
    print(f"\nguard run --once over a backlog of {n_inbox} messages ({'test' if args.test_rules else 'shipped'} rules, "
          f"{'before the first start: no replies' if args.first_start else 'after the first start: replies sent'})")
    print(f"  total {total:.1f} s   {done / total:.0f} msg/s   done {done}   left in inbox {left}   "
          f"replies/forwards/alerts accepted by SMTP {sent}   journal {states}")
    print(f"  goal 10,000 in under 60 s: {'met' if total < 60 and n_inbox >= 10_000 else 'NOT met' if n_inbox >= 10_000 else 'n/a (fewer messages)'}")
    return 0 if done >= n_inbox and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
