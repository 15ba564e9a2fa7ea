#!/usr/bin/env python3
"""RSS of `guard run` over a soak: steady mixed mail over IMAP IDLE for N minutes, RSS sampled.

    sudo python3 bench/soak.py [--minutes 60] [--interval 1.0] [--sample 10] [--test-rules]

Starts a private stack (Dovecot + the SMTP test server), starts `guard run` on it and appends one
message every INTERVAL seconds into the inbox (inquiries, scams, reports, bounces, out-of-office in
turn, every sender different so replies really go out). Every SAMPLE seconds it prints guard's
VmRSS; at the end the first, last, max and the drift (median of the last quarter minus median of
the first quarter, warm-up excluded). Goal: RSS under 150 MB and flat. The default is the
full one-hour soak; the test suite runs `--minutes 0.2`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _stack import Stack, mixed_message, rss_kb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="soak length (default 60)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between messages (default 1)")
    ap.add_argument("--sample", type=float, default=None, help="seconds between RSS samples (default: 1/60 of the run, 1..30 s)")
    ap.add_argument("--test-rules", action="store_true", help="use tests/integration/daemon_rules")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    seconds = args.minutes * 60
    sample_every = args.sample or max(1.0, min(30.0, seconds / 60))

    with Stack(test_rules=args.test_rules, keep=args.keep) as st:
        st.run_once()  # the first start: what arrives from now on is new mail
        st.start_guard()
        pid = st.proc.pid
        imap = st.imap()
        print(f"soak: {args.minutes:g} min, one message every {args.interval:g} s, RSS every {sample_every:g} s "
              f"(guard pid {pid})", flush=True)
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        next_msg = next_sample = t0
        sent = 0
        while True:
            now = time.monotonic()
            if now - t0 >= seconds:
                break
            if st.proc.poll() is not None:
                print(f"guard exited with {st.proc.returncode}:\n{st.log.read_text()[-3000:]}", file=sys.stderr)
                return 1
            if now >= next_msg:
                try:
                    imap.append("INBOX", mixed_message(sent, "soak"))
                except Exception:
                    imap = st.imap()
                    imap.append("INBOX", mixed_message(sent, "soak"))
                sent += 1
                next_msg += args.interval
            if now >= next_sample:
                kb = rss_kb(pid)
                samples.append((now - t0, kb))
                print(f"rss t={now - t0:7.1f}s rss_mb={kb / 1024:7.1f} sent={sent} sink={st.sink_count()}", flush=True)
                next_sample += sample_every
            time.sleep(max(0.0, min(next_msg, next_sample) - time.monotonic()))
        # let the last messages be handled, then one last sample
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = imap.select_folder("INBOX")[b"EXISTS"]
            if left == 0:
                break
            time.sleep(0.5)
        kb = rss_kb(pid)
        samples.append((time.monotonic() - t0, kb))
        print(f"rss t={samples[-1][0]:7.1f}s rss_mb={kb / 1024:7.1f} sent={sent} sink={st.sink_count()} (final)",
              flush=True)
        try:
            imap.logout()
        except Exception:
            pass
        left = st.imap().select_folder("INBOX")[b"EXISTS"]

    mb = [kb / 1024 for _, kb in samples]
    n = len(mb)
    q = max(1, n // 4)
    body = mb[1:] if n > 4 else mb  # the first sample is before any mail
    first_q = statistics.median(body[:q])
    last_q = statistics.median(body[-q:])
    print(f"\nguard RSS over a {args.minutes:g}-minute soak ({sent} messages, {n} samples, "
          f"{'test' if args.test_rules else 'shipped'} rules)")
    print(f"  first {mb[0]:.1f} MB   last {mb[-1]:.1f} MB   min {min(mb):.1f} MB   max {max(mb):.1f} MB")
    print(f"  median first quarter {first_q:.1f} MB   median last quarter {last_q:.1f} MB   drift {last_q - first_q:+.1f} MB")
    print(f"  messages left unprocessed in the inbox: {left}")
    ok = max(mb) < 150
    print(f"  goal RSS < 150 MB: {'met' if ok else 'NOT met'}")
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
