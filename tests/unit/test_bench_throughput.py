"""bench/throughput.py runs end to end on a tiny corpus (guard only: no spamd, no rspamd)."""

from __future__ import annotations

import json
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
