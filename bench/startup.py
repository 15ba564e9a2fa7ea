#!/usr/bin/env python3
"""One-shot start-up of ``guard classify`` and guard's peak memory with both models loaded.

    python3 bench/startup.py                     # 21 one-shot runs of one sample, then the RSS pass
    python3 bench/startup.py --runs 51 --sample FILE.eml --messages 400

What it does (see bench/README.md):

1. **One-shot wall time**: ``guard classify --json SAMPLE`` started as a fresh process ``--runs``
   times (after ``--warmup`` runs that are not counted), one after the other; for each run the wall
   time from spawning to exit, and the child's own CPU time (user + system) and peak RSS
   (``wait4``'s ``ru_maxrss``). The headline is the **median wall time**; CPU is beside it because on
   a shared machine the wall time includes waiting for a core. The load average is read before and
   after.
2. **Cold start**: one more run with an empty guard cache (``GUARD_CACHE_DIR`` in a temporary
   directory): what the first start after an install or upgrade costs (guard then unpacks the
   language model and the models into its cache, see guard/cache.py).
3. **Peak RSS with the models loaded**: one ``guard classify --json`` process over ``--messages``
   messages (every k-th of ``../shared/corpus/labels.tsv`` when it exists, else guard/samples and
   models/corpus), rules + scam model + intent model, as bench/guard_worker.py measures it: the
   process's peak RSS (``ru_maxrss``, i.e. VmHWM) after loading everything and classifying them all.

Python's bytecode cache is used as an installed guard uses it: the children run with
``PYTHONDONTWRITEBYTECODE`` unset and ``PYTHONPYCACHEPREFIX`` in bench/results/pycache (nothing is
written beside the sources); ``--no-bytecode`` measures source compilation at every start instead.
Results go to bench/results/startup.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO / "guard" / "samples" / "scam-conference-committee-card.eml"
GOALS = {"one_shot_wall_s": 0.3, "peak_rss_mb": 100.0}


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def guard_command(module: bool = False) -> list[str]:
    """The installed ``guard`` entry point beside this interpreter, else (or with ``--module``)
    ``python -m guard`` run in this checkout."""
    exe = Path(sys.executable).with_name("guard")
    return [str(exe)] if exe.is_file() and not module else [sys.executable, "-m", "guard"]


def run_once(cmd: list[str], env: dict[str, str]) -> dict:
    """Spawn ``cmd``, wait for it: wall seconds, the child's CPU seconds and peak RSS (MiB), exit status."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, ru = os.wait4(proc.pid, 0)  # reaped here, with its resource usage
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024,
                "exit": proc.returncode, "stdout": out.read(), "stderr": err.read()}


def corpus_messages(limit: int) -> list[Path]:
    """Every k-th message of ../shared/corpus (deterministic), else the bundled samples and own examples."""
    shared = REPO.parent / "shared" / "corpus"
    labels = shared / "labels.tsv"
    if labels.is_file():
        paths = [shared / line.split("\t")[0] for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        own = REPO / "models" / "corpus"
        paths = sorted((REPO / "guard" / "samples").glob("*.eml")) + sorted(own.glob("**/*.eml"))
    paths = [p for p in paths if p.is_file()]
    step = max(1, len(paths) // limit) if limit else 1
    return paths[::step][:limit]


def summary(runs: list[dict]) -> dict:
    walls = sorted(r["wall_s"] for r in runs)
    cpus = sorted(r["cpu_s"] for r in runs)
    return {
        "runs": len(runs),
        "wall_s_median": round(statistics.median(walls), 4),
        "wall_s_min": round(walls[0], 4),
        "wall_s_max": round(walls[-1], 4),
        "cpu_s_median": round(statistics.median(cpus), 4),
        "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=21, help="one-shot runs counted (default 21; the median counts)")
    ap.add_argument("--warmup", type=int, default=2, help="runs before those, not counted (fill the caches)")
    ap.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="the message classified by each one-shot run")
    ap.add_argument("--messages", type=int, default=400, help="messages of the peak-RSS pass (0: skip it)")
    ap.add_argument("--no-model", action="store_true", help="rules only (guard classify --no-model)")
    ap.add_argument("--no-bytecode", action="store_true", help="no bytecode cache: sources compiled at every start")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache run")
    ap.add_argument("--module", action="store_true",
                    help="run `python -m guard` in this checkout instead of the installed entry point")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "startup.json")
    args = ap.parse_args(argv)

    cmd = guard_command(args.module)
    extra = ["--no-model"] if args.no_model else []
    env = dict(os.environ)
    results_dir = args.out.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.no_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
        pycache = None
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        pycache = results_dir / "pycache"
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    one_shot = cmd + ["classify", "--json", *extra, str(args.sample)]

    out: dict = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_start": loadavg()},
        "command": one_shot,
        "bytecode_cache": not args.no_bytecode,
        "goals": GOALS,
    }
    print(f"load average {out['host']['loadavg_start']}; {' '.join(one_shot)}", file=sys.stderr)
    expected = None
    for _ in range(max(0, args.warmup)):
        r = run_once(one_shot, env)
        if r["exit"] != 0:
            sys.stderr.write(r["stderr"].decode(errors="replace"))
            raise SystemExit(f"guard classify failed (exit {r['exit']})")
        expected = r["stdout"]
    runs = []
    for i in range(args.runs):
        r = run_once(one_shot, env)
        if r["exit"] != 0 or (expected is not None and r["stdout"] != expected):
            raise SystemExit(f"run {i}: exit {r['exit']} or a different output")
        runs.append({k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")})
    out["loadavg_after_one_shot"] = loadavg()
    out["one_shot"] = {**summary(runs), "each": [{k: round(v, 4) for k, v in r.items()} for r in runs]}

    if not args.no_cold:
        cold_dir = Path(tempfile.mkdtemp(prefix="guard-startup-cache."))
        try:
            r = run_once(one_shot, {**env, "GUARD_CACHE_DIR": str(cold_dir)})
            again = run_once(one_shot, {**env, "GUARD_CACHE_DIR": str(cold_dir)})
        finally:
            shutil.rmtree(cold_dir, ignore_errors=True)
        out["cold_cache"] = {"wall_s": round(r["wall_s"], 3), "cpu_s": round(r["cpu_s"], 3),
                             "peak_rss_mb": round(r["peak_rss_mb"], 1), "same_output": r["stdout"] == again["stdout"],
                             "next_run_wall_s": round(again["wall_s"], 3)}

    if args.messages:
        paths = corpus_messages(args.messages)
        r = run_once(cmd + ["classify", "--json", *extra, *map(str, paths)], env)
        lines = r["stdout"].count(b"\n")
        out["peak_rss"] = {"messages": len(paths), "verdict_lines": lines, "peak_rss_mb": round(r["peak_rss_mb"], 1),
                           "wall_s": round(r["wall_s"], 2), "cpu_s": round(r["cpu_s"], 2), "exit": r["exit"],
                           "model": not args.no_model}
    out["loadavg_end"] = loadavg()
    one = out["one_shot"]
    out["goals_met"] = {"one_shot_wall_s": one["wall_s_median"] < GOALS["one_shot_wall_s"]}
    if "peak_rss" in out:
        out["goals_met"]["peak_rss_mb"] = out["peak_rss"]["peak_rss_mb"] < GOALS["peak_rss_mb"]
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    print(f"one-shot guard classify{' --no-model' if args.no_model else ''} ({one['runs']} runs, "
          f"bytecode cache {'on' if not args.no_bytecode else 'off'}):")
    print(f"  wall median {one['wall_s_median']:.3f} s (min {one['wall_s_min']:.3f}, max {one['wall_s_max']:.3f}), "
          f"CPU median {one['cpu_s_median']:.3f} s, peak RSS {one['peak_rss_mb_median']:.1f} MB   "
          f"[load average {out['host']['loadavg_start']} -> {out['loadavg_after_one_shot']}]")
    if "cold_cache" in out:
        c = out["cold_cache"]
        print(f"  cold cache (first start after an install): wall {c['wall_s']:.2f} s, CPU {c['cpu_s']:.2f} s, "
              f"peak RSS {c['peak_rss_mb']:.1f} MB; next start {c['next_run_wall_s']:.3f} s")
    if "peak_rss" in out:
        p = out["peak_rss"]
        print(f"peak RSS with {'rules only' if args.no_model else 'scam model + intent model'} after {p['messages']} "
              f"messages: {p['peak_rss_mb']:.1f} MB ({p['wall_s']:.1f} s)   [load average {out['loadavg_end']}]")
    print(f"goals: one-shot < {GOALS['one_shot_wall_s']} s: {'met' if out['goals_met']['one_shot_wall_s'] else 'NOT met'}"
          + (f"; peak RSS < {GOALS['peak_rss_mb']:.0f} MB: {'met' if out['goals_met']['peak_rss_mb'] else 'NOT met'}"
             if "peak_rss_mb" in out["goals_met"] else ""))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
