"""`guard train` and `guard evaluate` end to end on a tiny own-examples corpus (no public corpus, no network)."""

from __future__ import annotations

import json

import pytest

from guard.cli.main import main
from guard.classification.model import load_model, read_own, read_public

from test_model_artefact import genuine, scam


def _report(i: int) -> bytes:
    return (
        f"From: Participant {i} <p{i}@uni{i % 3}.example>\nTo: events@crm.cat\nSubject: Fwd: is this from you?\n\n"
        f"Hello, I received the message below. Is this legit? Did you send it?\nThanks, P{i}\n\n"
        "---------- Forwarded message ---------\nFrom: Housing <housing@gmail.com>\nDate: Mon, 3 Nov 2025 10:00:00 +0100\n"
        "Subject: Rooms\nTo: <p@uni.example>\n\n"
        "We are the official housing provider. Send your credit card number to secure your room.\n"
    ).encode()


@pytest.fixture()
def own_corpus(tmp_path):
    root = tmp_path / "corpus"
    rows = ["path\tcategory\tinner\tpaid\tlang\tgroup"]
    for split, n in (("train", 16), ("holdout", 3)):
        for i in range(n):
            for cat, gen, inner in (("scam", scam, "-"), ("inquiry", genuine, "-"), ("report", _report, "scam")):
                rel = f"{split}/{cat}/{i:03d}-x.eml"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(gen(i + (100 if split == "holdout" else 0)))
                rows.append(f"{rel}\t{cat}\t{inner}\tno\ten\t{cat}-{i // 2}")
    rows.append("train/scam/999-not-written-yet.eml\tscam\t-\tno\ten\tx")
    (root / "labels.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_read_own_takes_only_the_train_split(own_corpus):
    train = read_own(own_corpus, "train")
    assert len(train) == 48 and all(s.key.startswith("own:train/") for s in train)
    assert {s.category for s in train} == {"scam", "inquiry", "report"}
    assert not any(s.positive for s in train if s.category == "report"), "reports are negatives"


def test_public_subsample_is_deterministic(tmp_path):
    d = tmp_path / "pub"
    (d / "x").mkdir(parents=True)
    lines = []
    for i in range(40):
        (d / "x" / f"{i}.eml").write_bytes(scam(i) if i % 2 else genuine(i))
        lines.append(f"x/{i}.eml\t{'spam' if i % 2 else 'ham'}\tsub")
    (d / "labels.tsv").write_text("\n".join(lines) + "\n")
    a = [s.key for s in read_public(d, 10)]
    b = [s.key for s in read_public(d, 10)]
    assert a == b and len(a) == 10
    assert sum(s.positive for s in read_public(d, 10)) == 5


def test_train_then_evaluate(own_corpus, tmp_path, capsys):
    out = tmp_path / "models"
    assert main(["train", "--own", str(own_corpus), "--events-only", "--out", str(out), "--jobs", "1",
                 "--metrics", str(tmp_path / "none.json")]) == 2  # a named metrics file must exist
    assert main(["train", "--own", str(own_corpus), "--events-only", "--out", str(out), "--jobs", "1"]) == 0
    model = load_model(out / "guard-model.skops")
    meta = json.loads((out / "guard-model.json").read_text())
    assert meta["training"]["label_counts"]["own"] == {"scam": 16, "inquiry": 16, "report": 16}
    # each report adds its forwarded scam as a positive row
    assert meta["training"]["rows"] == 48 + 16 and meta["training"]["positive_rows"] == 16 + 16
    from guard.mail.message import parse

    assert model.scam_probability(parse(scam(500))) > 0.5 > model.scam_probability(parse(_report(500)))

    report_dir = tmp_path / "report"
    capsys.readouterr()
    assert main(["evaluate", "--own", str(own_corpus), "--events-only", "--out", str(report_dir), "--jobs", "1",
                 "--folds", "3", "--no-holdout", "--explain"]) == 0
    text = capsys.readouterr().out
    assert "CROSS-VALIDATED, own events-office examples: 48 messages" in text
    assert "confusion matrix" in text and "FPR on genuine" in text
    assert "top model features per message" in text
    for name in ("confusion_matrix.png", "pr_curve.png", "metrics.json", "report.txt", "predictions.tsv"):
        assert (report_dir / name).is_file(), name
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["folds"] == 3 and "scam" in metrics["cv_own"]["per_category_full"]
    assert (report_dir / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"
