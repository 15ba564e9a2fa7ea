#!/usr/bin/env python3
"""The guard side of bench/throughput.py, run as its own process so that its memory and start-up
are guard's alone (the parent holds scikit-learn, the training data and the peer clients).

    python3 bench/guard_worker.py --list FILE --out JSON [--model DIR] [--timing FILE] [--repeats 3] [--cpu N] [--serve]

1. pins itself to one CPU (not with --no-pin), loads the bundled settings, the shipped rules and (with --model) the
   model artefact in DIR (verified like the shipped one); start-up time is reported, not timed below;
2. reads, parses and classifies every file in --list one at a time (rules + model, and rules only),
   keeping each verdict for the accuracy figures;
3. reads peak RSS (VmHWM) at that point: a process that loaded everything and classified the split;
4. with --timing: reads those files into memory, then times parse + classify over them
   --repeats times with the model and without it (interleaved), and reports each run: wall time
   and the process's own CPU time (user + system, ``resource.getrusage``), the same measure
   bench/peers.py takes of the peers' servers;
5. with --serve (and --timing): writes --out, prints ``ready`` and then waits on standard input:
   each line ``model`` or ``rules_only`` times one pass and answers one JSON line
   ``{"name", "wall_s", "cpu_s", "messages"}``; ``quit`` ends it. bench/throughput.py uses this
   to interleave guard's rounds with the peers' in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status(field: str) -> int:
    """A VmXXX field of /proc/self/status, in KiB (0 when unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", type=Path, required=True, help="files to classify, one path a line")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=None, help="directory with guard-model.skops + guard-model.json")
    ap.add_argument("--timing", type=Path, default=None, help="files to time (one path a line)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the last allowed one)")
    ap.add_argument("--no-pin", action="store_true", help="leave the CPU to the scheduler, as the peers' servers are")
    ap.add_argument("--serve", action="store_true", help="after --out, time passes on request (see above)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    allowed = sorted(os.sched_getaffinity(0))
    cpu = None if args.no_pin else (args.cpu if args.cpu is not None else allowed[-1])
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    sys.path.insert(0, str(REPO))
    from guard.classification.assemble import build_classifier, load_rules
    from guard.mail.message import parse
    from guard.settings import load_settings

    settings = load_settings(None)
    ruleset = load_rules(settings)
    model = None
    if args.model is not None:
        from guard.classification.model import ARTEFACT_NAME, load_model

        model = load_model(args.model / ARTEFACT_NAME)
    clf = build_classifier(settings, model=model, ruleset=ruleset)
    rules_only = build_classifier(settings, model=None, ruleset=ruleset)
    startup = time.perf_counter() - t_start
    rss_loaded = _status("VmRSS")

    paths = [p for p in args.list.read_text(encoding="utf-8").splitlines() if p]
    verdicts = []
    t0 = time.perf_counter()
    for p in paths:
        msg = parse(Path(p).read_bytes())
        v = clf.classify(msg)
        verdicts.append({"category": v.category, "score": round(v.score, 3),
                         "model_p": None if v.model_p is None else round(v.model_p, 6)})
    stream_s = time.perf_counter() - t0
    for p, rec in zip(paths, verdicts):
        rec["rules_category"] = rules_only.classify(parse(Path(p).read_bytes())).category
    peak_kib = _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {
        "cpu": cpu,
        "model": model is not None,
        "startup_seconds": round(startup, 3),
        "rss_after_load_mb": round(rss_loaded / 1024, 1),
        "peak_rss_mb": round(peak_kib / 1024, 1),
        "messages": len(paths),
        "stream_seconds": round(stream_s, 3),
        "stream_msg_per_s": round(len(paths) / stream_s, 1) if stream_s else None,
        "verdicts": verdicts,
    }
    classifiers = {"model": clf, "rules_only": rules_only}

    def timed(name: str, data: list[bytes]) -> tuple[float, float]:
        c = classifiers[name]
        r0, t0 = _cpu(), time.perf_counter()
        for raw in data:
            c.classify(parse(raw))
        return time.perf_counter() - t0, _cpu() - r0

    if args.timing is not None:
        data = [Path(p).read_bytes() for p in args.timing.read_text(encoding="utf-8").splitlines() if p]
        for raw in data[:20]:  # first use: lazily compiled patterns, caches
            clf.classify(parse(raw))
        runs: dict[str, list[float]] = {"model": [], "rules_only": []}
        cpus: dict[str, list[float]] = {"model": [], "rules_only": []}
        for _ in range(0 if args.serve else args.repeats):
            for name in ("model", "rules_only"):
                if name == "model" and model is None:
                    continue
                wall, cpu_s = timed(name, data)
                runs[name].append(wall)
                cpus[name].append(cpu_s)
        out["timing"] = {
            "messages": len(data),
            "bytes": sum(len(d) for d in data),
            "runs_seconds": {k: [round(x, 4) for x in v] for k, v in runs.items() if v},
            "runs_cpu_seconds": {k: [round(x, 4) for x in v] for k, v in cpus.items() if v},
            "best_msg_per_s": {k: round(len(data) / min(v), 1) for k, v in runs.items() if v},
            "cpu_ms_per_message_median": {k: round(1000 * sorted(v)[len(v) // 2] / len(data), 3)
                                          for k, v in cpus.items() if v},
        }
    args.out.write_text(json.dumps(out), encoding="utf-8")
    if args.serve and args.timing is not None:
        print("ready", flush=True)
        for line in sys.stdin:
            name = line.strip()
            if name == "quit" or not name:
                break
            wall, cpu_s = timed(name, data)
            print(json.dumps({"name": name, "wall_s": wall, "cpu_s": cpu_s, "messages": len(data)}), flush=True)
    return 0


def _cpu() -> float:
    """This process's CPU seconds, user + system."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


if __name__ == "__main__":
    sys.exit(main())
