"""bench/throughput.py runs end to end on a tiny corpus (guard only: no spamd, no rspamd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "guard" / "samples"


def _tiny_corpus(root: Path, copies: int = 4) -> Path:
    """The bundled samples, a few copies each (a header differs), in the public corpus layout."""
    corpus = root / "corpus"
    rows = []
    for src in sorted(SAMPLES.glob("*.eml")):
        label = "spam" if src.name.startswith("scam-") else "ham"
        sub = corpus / "samples" / label
        sub.mkdir(parents=True, exist_ok=True)
        raw = src.read_bytes()
        for k in range(copies):
            dst = sub / f"{src.stem}-{k}.eml"
            dst.write_bytes(f"X-Bench-Copy: {k}\r\n".encode() + raw)
            rows.append(f"{dst.relative_to(corpus)}\t{label}\tsamples\n")
    (corpus / "labels.tsv").write_text("".join(rows), encoding="utf-8")
    return corpus


def test_throughput_benchmark_guard_only(tmp_path):
    corpus = _tiny_corpus(tmp_path)
    shipped = {p.name: p.read_bytes() for p in (REPO / "models").glob("guard-model.*")}
    out = tmp_path / "results" / "throughput.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "throughput.py"), "--corpus", str(corpus), "--skip-peers",
         "--limit", "40", "--no-own", "--repeats", "1", "--timing-n", "0", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout
    assert "guard rules + model (1 core)" in text
    assert "guard rules only (1 core)" in text
    assert "guard peak RSS:" in text
    assert "precision" in text and "FPR ham" in text
    assert "guard model alone P>=0.9" in text
    assert "SpamAssassin" not in text.split("accuracy on the held-out split")[1]  # peers skipped

    res = json.loads(out.read_text(encoding="utf-8"))
    held = sum(res["split"]["heldout"].values())
    assert held > 0 and sum(res["split"]["train_public"].values()) > held
    t = res["throughput"]
    assert t["guard_rules_model_msg_per_s"] > 0 and t["guard_rules_only_msg_per_s"] > 0
    assert 10 < t["guard_peak_rss_mb"] < 2000
    assert "ratio_guard_vs_spamassassin" not in t
    for name, b in res["accuracy"].items():
        assert set(b) >= {"precision", "recall", "f1", "fpr_ham", "tp", "fp", "fn"}, name
        assert 0.0 <= b["precision"] <= 1.0 and 0.0 <= b["fpr_ham"] <= 1.0
        assert b["positives"] + b["ham"] == held
    assert res["guard"]["messages"] == held
    # the benchmark trains its own model in a temporary directory: the shipped one is untouched
    assert {p.name: p.read_bytes() for p in (REPO / "models").glob("guard-model.*")} == shipped


def test_the_timeline_splits_the_run_by_cores_in_use_and_names_who_ran_when_half_idle():
    """bench/timeline.py's arithmetic on a made-up timeline (the run itself needs root and the stack)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import timeline
    finally:
        sys.path.pop(0)
    ms = 1_000_000  # ns
    samples, cpu = [], {"main": 0, "worker": 0, "smtp": 0, "dovecot": 0}
    for k in range(401):  # 10 ms apart; skip the first 1.5 s, then 1 s of "main alone", 1 s of "all four"
        t = k * 0.01
        samples.append((t, {r: {i + 1: cpu[r]} for i, r in enumerate(timeline.ROLES)}))
        if t >= 1.5:
            both = t >= 2.5
            cpu["main"] += 10 * ms
            cpu["worker"] += 10 * ms if both else 0
            cpu["smtp"] += 2 * ms if both else 1 * ms
            cpu["dovecot"] += 3 * ms if both else 0
    a = timeline.analyse(samples)
    assert abs(a["seconds"] - 2.5) < 0.02  # 1.5-4.0 s
    assert abs(a["low_share"] - 0.4) < 0.02  # the 1 s of main alone (1.1 cores)
    assert abs(a["low_cores"]["main"] - 1.0) < 0.01 and a["low_cores"]["worker"] == 0
    assert abs(a["low_cores"]["smtp"] - 0.1) < 0.01
    assert abs(a["busy"] - (1.1 * 1.0 + 2.5 * 1.5) / 2.5 / (os.cpu_count() or 2)) < 0.02
