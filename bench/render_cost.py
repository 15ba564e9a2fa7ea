#!/usr/bin/env python3
"""Per-message CPU cost of the campaign fingerprint and of rendering replies and forwards.

    .venv/bin/python bench/render_cost.py                 # ms per message, best of --repeats
    .venv/bin/python bench/render_cost.py --profile reply # cProfile of build_reply (or forward, fingerprint)
    .venv/bin/python bench/render_cost.py --dump FILE     # write every rendered output (to compare two versions)

Over the messages in guard/samples/ (parsed and classified once, outside the timing):
``fingerprint`` is :func:`guard.digest.campaigns.fingerprint` as the journal calls it
(guard.digest.records.facts_of), ``build_reply`` renders every reply template for every
message (live and shadow mode), ``build_forward`` every forward template, each call with its
own clock reading and Message-ID; ``forward+reply`` is what an inquiry costs (forward_summary
and inquiry_ack for one message, the memos cleared first: a new sender, the realistic figure). Figures are CPU milliseconds per call, best of ``--repeats``
runs of ``--rounds`` passes each. ``--cold`` clears guard.respond.render's memos (folded header lines, the
last message's event) before every call: the worst case, a new sender, subject and second every
time and one output per message. Without it every message renders several outputs in a row and
more headers repeat than in a real run: the truth lies in between.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import itertools
import pstats
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from guard.digest import campaigns  # noqa: E402
from guard.respond import render  # noqa: E402
from guard.classification.assemble import build_classifier, load_rules  # noqa: E402
from guard.daemon.service import load_policy_and_templates  # noqa: E402
from guard.digest.records import FINGERPRINT_CHARS  # noqa: E402
from guard.mail.message import parse  # noqa: E402
from guard.respond.render import Identity, build_forward, build_reply  # noqa: E402
from guard.settings import load_settings  # noqa: E402

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
REPLIES = ("inquiry_ack", "report_verdict", "report_paid")
FORWARDS = ("forward_summary", "coordinator_alert")


def load():
    settings = load_settings()
    classifier = build_classifier(settings, ruleset=load_rules(settings))
    _policy, renderer = load_policy_and_templates(settings)
    ident = Identity.from_settings(settings)
    items = []
    for path in sorted((REPO / "guard" / "samples").glob("*.eml")):
        raw = path.read_bytes()
        msg = parse(raw)
        items.append((path.name, raw, msg, classifier.classify(msg)))
    return renderer, ident, items


_SEQ = itertools.count(1)


def fresh() -> tuple[datetime, str]:
    """A new clock reading (one second later) and Message-ID per call, as in a real run."""
    n = next(_SEQ)
    return NOW + timedelta(seconds=n), f"<guard.{n:016x}.1@crm.cat>"


def jobs(renderer, ident, items, cold: bool = False):
    def call(fn, **kw):
        if cold:  # nothing memoised: every header parsed and folded again, the event detected again
            render.clear_memos()
        now, mid = fresh()
        return fn(now=now, message_id=mid, **kw)

    fp, reply, forward = [], [], []
    for _name, raw, msg, verdict in items:
        src = msg.forwarded[0] if msg.forwarded else msg
        fp.append(lambda s=src: campaigns.fingerprint(s.subject, s.text[:FINGERPRINT_CHARS]))
        for t in REPLIES:
            for shadow in (False, True):
                reply.append(lambda t=t, m=msg, v=verdict, s=shadow: call(
                    build_reply, renderer=renderer, template=t, msg=m, verdict=v, ident=ident,
                    shadow_for_coordinator=s))
        for t in FORWARDS:
            forward.append(lambda t=t, r=raw, m=msg, v=verdict: call(
                build_forward, renderer=renderer, template=t, raw=r, msg=m, verdict=v, ident=ident))

    def inquiry(raw, msg, verdict):
        """What the policy does with an inquiry: a forward and a reply, memos cleared before (a new sender)."""
        render.clear_memos()
        now, mid = fresh()
        a = build_forward(renderer, "forward_summary", raw=raw, msg=msg, verdict=verdict, ident=ident, now=now,
                          message_id=mid)
        b = build_reply(renderer, "inquiry_ack", msg=msg, verdict=verdict, ident=ident, now=now,
                        message_id=mid.replace(".1@", ".2@"))
        return Both(a.raw + b.raw)

    both = [lambda r=raw, m=msg, v=v: inquiry(r, m, v) for _name, raw, msg, v in items]
    return {"fingerprint": fp, "build_reply": reply, "build_forward": forward, "forward+reply": both}


class Both:
    kind = template = recipient = envelope_from = message_id = "both"
    headers: dict = {}

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


def timeit(calls, rounds: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(rounds):
            for c in calls:
                c()
        best = min(best, (time.process_time() - t0) / (rounds * len(calls)))
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", choices=("fingerprint", "reply", "forward"))
    ap.add_argument("--dump", type=Path, help="write a digest of every output (to compare two versions)")
    ap.add_argument("--cold", action="store_true", help="clear guard.respond.render's memos before every call")
    args = ap.parse_args()
    renderer, ident, items = load()
    j = jobs(renderer, ident, items, cold=args.cold)
    if args.dump:
        global _SEQ
        _SEQ = itertools.count(1)
        with args.dump.open("w") as f:
            for key, calls in j.items():
                for i, c in enumerate(calls):
                    out = c()
                    data = out if isinstance(out, str) else out.raw + repr(
                        (out.kind, out.template, out.recipient, out.envelope_from, out.message_id, out.headers)).encode()
                    f.write(f"{key} {i} {hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()}\n")
        print(f"wrote {args.dump}")
        return
    for calls in j.values():  # warm-up (template compilation, caches)
        for c in calls:
            c()
    if args.profile:
        key = {"fingerprint": "fingerprint", "reply": "build_reply", "forward": "build_forward"}[args.profile]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.rounds):
            for c in j[key]:
                c()
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        return
    print(f"{len(items)} sample messages; CPU ms per call, best of {args.repeats} x {args.rounds} rounds"
          + (" (memos cleared before every call)" if args.cold else ""))
    for key, calls in j.items():
        print(f"  {key:14s} {timeit(calls, args.rounds, args.repeats):8.3f} ms   ({len(calls)} calls per round)")


if __name__ == "__main__":
    main()
