"""`guard classify`: inputs (.eml, directory, mbox, stdin) and the stable JSON interface."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guard.cli.main import main
from guard.paths import samples_dir

REPO = Path(__file__).resolve().parents[3]
SHARED_CORPUS = REPO.parent / "shared" / "corpus"

SCAM = b"From: Conference Committee <cc.housing@gmail.com>\nSubject: Your room\nMessage-ID: <s1@x>\n\nDear speaker, we are the official housing provider. Confirm your arrival and departure dates and send your credit card number and CVV.\n"
ASK = b"From: P <p@uni.example>\nSubject: Visa letter\nMessage-ID: <a1@x>\n\nCould you send me an invitation letter for my visa?\n"


def _run(args, capsys) -> list[dict]:
    assert main(["classify", "--json", "--no-model", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_json_keys_and_values(tmp_path, capsys):
    (tmp_path / "scam.eml").write_bytes(SCAM)
    (tmp_path / "ask.eml").write_bytes(ASK)
    out = _run([str(tmp_path / "scam.eml"), str(tmp_path / "ask.eml")], capsys)
    assert [o["source"] for o in out] == [str(tmp_path / "scam.eml"), str(tmp_path / "ask.eml")]
    for o in out:
        assert {"source", "message_id", "category", "score", "reasons", "inner"} <= set(o)
        for r in o["reasons"]:
            assert set(r) == {"rule", "description", "score"}
    assert out[0]["category"] == "scam" and out[0]["message_id"] == "<s1@x>" and out[0]["inner"] is None
    assert out[0]["score"] >= 4.0
    assert out[1]["category"] == "inquiry"


def test_report_carries_inner_verdict(tmp_path, capsys):
    report = (
        b"From: P <p@uni.example>\nSubject: Fwd: Your room\n\nI received this, is it legit?\n\n"
        b"---------- Forwarded message ---------\nFrom: Conference Committee <cc.housing@gmail.com>\nDate: Mon, 3 Nov 2025\n"
        b"Subject: Your room\nTo: <p@uni.example>\n\n" + SCAM.split(b"\n\n", 1)[1]
    )
    (tmp_path / "r.eml").write_bytes(report)
    (o,) = _run([str(tmp_path / "r.eml")], capsys)
    assert o["category"] == "report"
    assert o["inner"]["category"] == "scam"
    assert any(r["rule"] == "FREEMAIL_ORGANISER" for r in o["inner"]["reasons"])


def test_directory_recursive_mbox_and_skips_non_mail(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.eml").write_bytes(ASK)
    (tmp_path / "README.md").write_text("not mail")
    (tmp_path / "labels.tsv").write_text("x\ty")
    mbox = b"From a@b Mon Nov  3 10:00:00 2025\n" + SCAM + b"\nFrom c@d Mon Nov  3 11:00:00 2025\n" + ASK + b"\n"
    (tmp_path / "box.mbox").write_bytes(mbox)
    out = _run([str(tmp_path)], capsys)
    sources = sorted(o["source"] for o in out)
    assert sources == sorted([str(tmp_path / "box.mbox") + "#1", str(tmp_path / "box.mbox") + "#2", str(tmp_path / "sub" / "a.eml")])


def test_single_message_with_envelope_line_is_not_an_mbox(tmp_path, capsys):
    (tmp_path / "one.eml").write_bytes(b"From a@b Mon Nov  3 10:00:00 2025\n" + ASK)
    out = _run([str(tmp_path / "one.eml")], capsys)
    assert len(out) == 1 and out[0]["source"] == str(tmp_path / "one.eml")


def test_stdin(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ASK)))
    (o,) = _run(["-"], capsys)
    assert o["source"] == "-" and o["category"] == "inquiry"


def test_missing_path_reports_error_line(tmp_path, capsys):
    (o,) = _run([str(tmp_path / "absent.eml")], capsys)
    assert o["source"].endswith("absent.eml") and "no such file" in o["error"]


def test_human_output_explain(capsys):
    assert main(["classify", "--explain", "--no-model", str(samples_dir())]) == 0
    out = capsys.readouterr().out
    assert "scam" in out and "inquiry" in out


def test_bundled_samples_get_their_categories(capsys):
    out = _run([str(samples_dir())], capsys)
    assert len(out) >= 8
    for o in out:
        expected = Path(o["source"]).name.split("-", 1)[0]
        if expected == "scam":
            assert o["category"] in ("scam", "suspicious"), o
        else:
            assert o["category"] not in ("scam", "suspicious"), o


@pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason="../shared/corpus not present")
def test_shared_corpus_one_line_per_message():
    """`guard classify --json ../shared/corpus` prints exactly one JSON line per message (as a real subprocess)."""
    labels = [line.split("\t")[0] for line in (SHARED_CORPUS / "labels.tsv").read_text().splitlines() if line.strip()]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "guard", "classify", "--json", "--no-model", str(SHARED_CORPUS)],
        capture_output=True, check=False, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(labels)
    seen = {json.loads(line)["source"].split("corpus/", 1)[1] for line in lines}
    assert seen == set(labels)
