"""`guard train` and `guard evaluate` end to end on a tiny own-examples corpus (no public corpus, no network)."""

from __future__ import annotations

import json
from pathlib import Path

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


# -- issue 18: training never overwrites the shipped models; guard loads the trained ones first ----------


def _config(tmp_path, extra: str = "") -> "Path":
    """The bundled sample institute with its journal (and so the models directory) under tmp_path."""
    from guard.paths import bundled_config

    f = tmp_path / "guard.toml"
    f.write_text(bundled_config().read_text(encoding="utf-8").replace("[daemon]\n", f'[daemon]\njournal = "{tmp_path / "state" / "journal.sqlite3"}"\n', 1)
                 + extra, encoding="utf-8")
    return f


def _digest(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_writes_to_the_models_directory_and_guard_loads_it_first(own_corpus, tmp_path, capsys):
    from guard.classification.model_loader import find_intent, find_model
    from guard.paths import shipped
    from guard.settings import load_settings

    cfg = _config(tmp_path)
    shipped_files = {p.name: _digest(p) for p in shipped("models").glob("guard-*.*")}
    assert main(["train", "--config", str(cfg), "--own", str(own_corpus), "--events-only", "--jobs", "1"]) == 0
    models = tmp_path / "state" / "models"
    assert (models / "guard-model.skops").is_file() and (models / "guard-model.json").is_file()
    out = capsys.readouterr().out
    assert f"guard loads the models in {models}" in out
    settings = load_settings(cfg)
    model, source = find_model(settings)
    assert source == models / "guard-model.skops" and model.metadata["training"]["label_counts"]["own"]["scam"] == 16
    # the intent model too (--intent-only), over the scam model in use
    assert main(["train", "--intent-only", "--config", str(cfg), "--own", str(own_corpus)]) == 0
    assert find_intent(settings)[1] == models / "guard-intent.npz"
    assert {p.name: _digest(p) for p in shipped("models").glob("guard-*.*")} == shipped_files, "shipped models untouched"


def test_a_trained_model_that_fails_verification_falls_back_to_the_shipped_one(tmp_path, caplog):
    from guard.classification.model_loader import find_intent, find_model
    from guard.paths import shipped
    from guard.settings import load_settings

    settings = load_settings(_config(tmp_path))
    models = tmp_path / "state" / "models"
    models.mkdir(parents=True)
    for name in ("guard-model.skops", "guard-model.json", "guard-intent.npz", "guard-intent.json"):
        (models / name).write_bytes((shipped("models") / name).read_bytes())
    (models / "guard-model.skops").write_bytes(b"tampered")
    (models / "guard-intent.npz").write_bytes(b"tampered")
    assert find_model(settings)[1] == shipped("models") / "guard-model.skops"
    assert find_intent(settings)[1] == shipped("models") / "guard-intent.npz"
    assert "falling back to the shipped model" in caplog.text


def test_models_dir_setting(tmp_path):
    from guard.paths import state_models_dir
    from guard.settings import load_settings

    cfg = _config(tmp_path, f'\n[learning]\nmodels_dir = "{tmp_path / "elsewhere"}"\n')
    assert state_models_dir(load_settings(cfg)) == tmp_path / "elsewhere"
    assert state_models_dir(load_settings(_config(tmp_path))) == tmp_path / "state" / "models"


def test_training_without_the_public_corpus_needs_events_only(own_corpus, tmp_path, capsys, monkeypatch):
    import guard.classification.model as model_module

    monkeypatch.setattr(model_module, "default_public_corpus", lambda repo: None)
    assert main(["train", "--config", str(_config(tmp_path)), "--own", str(own_corpus), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "no public corpus found" in err and "--events-only" in err and "--corpus DIR" in err
    assert not (tmp_path / "state" / "models" / "guard-model.skops").exists()


def test_training_never_writes_into_the_installed_package(own_corpus, tmp_path, capsys):
    import guard

    inside = Path(guard.__file__).parent / "_shipped" / "models"  # where a wheel keeps the shipped models
    before = {p.name: _digest(p) for p in inside.glob("*") if p.is_file()} if inside.is_dir() else None
    for command in (["train", "--events-only"], ["train", "--intent-only"]):
        assert main([*command, "--own", str(own_corpus), "--out", str(inside), "--jobs", "1"]) == 2
        assert "the shipped model is never overwritten" in capsys.readouterr().err
    after = {p.name: _digest(p) for p in inside.glob("*") if p.is_file()} if inside.is_dir() else None
    assert before == after


def test_evaluate_writes_its_report_into_the_working_directory(own_corpus, tmp_path, capsys, monkeypatch):
    import builtins

    monkeypatch.chdir(tmp_path)
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib here")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["evaluate", "--own", str(own_corpus), "--events-only", "--jobs", "1", "--folds", "3",
                 "--no-holdout"]) == 0
    err = capsys.readouterr().err
    report = tmp_path / "guard-report"
    assert (report / "report.txt").is_file() and (report / "metrics.json").is_file()
    assert not (report / "confusion_matrix.png").exists()
    wrote = [line for line in err.splitlines() if "wrote " in line][-1]
    assert "metrics.json" in wrote and ".png" not in wrote, wrote  # says only what it wrote


def test_model_metadata_records_no_machine_paths(own_corpus, tmp_path):
    from guard.paths import shipped

    pub = tmp_path / "somewhere" / "public-corpus"
    (pub / "x").mkdir(parents=True)
    lines = []
    for i in range(10):
        (pub / "x" / f"{i}.eml").write_bytes(scam(i + 300) if i % 2 else genuine(i + 300))
        lines.append(f"x/{i}.eml\t{'spam' if i % 2 else 'ham'}\tsub")
    (pub / "labels.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    metrics = tmp_path / "guard-report" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"created": "x", "folds": 3}))
    assert main(["train", "--own", str(own_corpus), "--corpus", str(pub), "--out", str(out), "--jobs", "1",
                 "--metrics", str(metrics)]) == 0
    for meta in (out / "guard-model.json", shipped("models") / "guard-model.json", shipped("models") / "guard-intent.json"):
        text = meta.read_text()
        assert str(tmp_path) not in text and "/work/" not in text and "/home/" not in text, meta
        _no_absolute_paths(json.loads(text), meta)
    assert json.loads((out / "guard-model.json").read_text())["training"]["public_dirs"] == ["public-corpus"]


def _no_absolute_paths(node, where) -> None:
    if isinstance(node, dict):
        for v in node.values():
            _no_absolute_paths(v, where)
    elif isinstance(node, list):
        for v in node:
            _no_absolute_paths(v, where)
    elif isinstance(node, str):
        assert not node.startswith(("/", "~")) and ":\\" not in node, f"{where}: {node}"
