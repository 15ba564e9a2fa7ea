"""guard.classification.model: a tiny model trained here scores the same after save/load; tampered or mismatched artefacts are refused."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import skops.io as sio

from guard.classification import features as F
from guard.errors import ModelError
from guard.mail.message import parse
from guard.classification.model import ARTEFACT_NAME, METADATA_NAME, TRUSTED_TYPES, fit_model, load_model, save_model

EVENTS = ["CRM workshop", "Summer School", "Dynamics conference", "Topology week", "Data science day"]
NAMES = ["Ana", "Pierre", "Jordi", "Helen", "Marta", "Ken"]


def scam(i: int) -> bytes:
    ev = EVENTS[i % len(EVENTS)]
    return (
        f"From: {ev} Housing <housing{i}@gmail.com>\nSubject: Accommodation for the {ev}\n\n"
        f"Dear participant,\nwe are the official housing provider for the {ev}. Rooms are limited; "
        f"send your credit card number and expiry date to secure your room at our special rate of {80 + i} EUR.\n"
        f"Housing Department\n"
    ).encode()


def genuine(i: int) -> bytes:
    ev = EVENTS[i % len(EVENTS)]
    name = NAMES[i % len(NAMES)]
    topic = ["my visa letter", "the abstract deadline", "the poster size", "reimbursement of my train ticket", "the dinner"][i % 5]
    return (
        f"From: {name} <{name.lower()}@uni{i % 4}.example>\nSubject: Question about {topic}\n\n"
        f"Hello,\nI will attend the {ev}. Could you tell me more about {topic}? Thank you very much.\nBest wishes,\n{name}\n"
    ).encode()


def tiny_set():
    raws = [scam(i) for i in range(24)] + [genuine(i) for i in range(24)]
    y = [1] * 24 + [0] * 24
    msgs = [parse(r) for r in raws]
    terms = [F.terms(m) for m in msgs]
    return msgs, terms, y


@pytest.fixture(scope="module")
def tiny():
    msgs, terms, y = tiny_set()
    model = fit_model(terms, y, [1.0] * len(y), [f"g{i}" for i in range(len(y))], check=True)
    return msgs, terms, y, model


@pytest.fixture()
def saved(tiny, tmp_path):
    _, _, _, model = tiny
    artefact, meta = save_model(model, tmp_path, {"created": "test"})
    return artefact, meta


def test_tiny_model_separates_its_training_set(tiny):
    msgs, _, y, model = tiny
    p = np.array([model.scam_probability(m) for m in msgs])
    assert np.all(p[np.array(y) == 1] > 0.5) and np.all(p[np.array(y) == 0] < 0.5)


def test_features_at_train_time_equal_features_at_score_time(tiny):
    msgs, terms, _, model = tiny
    for m, t in zip(msgs, terms):
        again = F.terms(parse(_raw_of(m)))
        assert np.array_equal(again.word, t.word) and again.meta == t.meta and np.array_equal(again.char, t.char)
        c1, v1 = model.space.row(t)
        c2, v2 = model.space.row(again)
        assert np.array_equal(c1, c2) and np.array_equal(v1, v2)


def _raw_of(msg):
    # the tiny set is built from these generators; rebuild the raw bytes by subject
    for gen in (scam, genuine):
        for i in range(24):
            raw = gen(i)
            if parse(raw).subject == msg.subject and parse(raw).from_ == msg.from_:
                return raw
    raise AssertionError("not found")


def test_save_load_reproduces_training_time_predictions(tiny, saved):
    msgs, terms, _, model = tiny
    artefact, _ = saved
    before = [model.probability_from_terms(t) for t in terms]
    loaded = load_model(artefact)
    after = [loaded.scam_probability(m) for m in msgs]
    assert after == before  # bit-identical: same arrays, same arithmetic
    X = loaded.space.matrix(terms)
    assert np.allclose(loaded.probabilities(X), before, rtol=0, atol=1e-12)


def test_metadata_records_checksum_and_versions(saved):
    artefact, meta_path = saved
    meta = json.loads(meta_path.read_text())
    import hashlib

    assert meta["sha256"] == hashlib.sha256(artefact.read_bytes()).hexdigest()
    assert meta["size_bytes"] == artefact.stat().st_size
    assert {"scikit-learn", "skops", "numpy"} <= set(meta["versions"])
    assert meta["feature_version"] == F.FEATURE_VERSION


def test_explain_names_features(tiny):
    msgs, _, _, model = tiny
    top = model.explain(msgs[0], top=5)
    assert len(top) == 5
    assert all(isinstance(name, str) and not name.startswith("#") for name, _ in top)
    assert abs(top[0][1]) >= abs(top[-1][1])


def test_tampered_artefact_is_refused(saved):
    artefact, _ = saved
    data = bytearray(artefact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artefact.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(artefact)


def test_wrong_sklearn_version_is_refused(saved):
    artefact, meta_path = saved
    meta = json.loads(meta_path.read_text())
    meta["versions"]["scikit-learn"] = "0.24.2"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="scikit-learn 0.24.2"):
        load_model(artefact)


def test_other_feature_version_is_refused(saved):
    artefact, meta_path = saved
    meta = json.loads(meta_path.read_text())
    meta["feature_version"] = F.FEATURE_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="feature version"):
        load_model(artefact)


def test_missing_metadata_is_refused(saved):
    artefact, meta_path = saved
    meta_path.unlink()
    with pytest.raises(ModelError, match="metadata not found"):
        load_model(artefact)


def test_missing_artefact_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / ARTEFACT_NAME)


def test_garbage_metadata_is_refused(saved):
    artefact, meta_path = saved
    meta_path.write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_model(artefact)


def test_untrusted_types_are_refused_even_with_a_matching_checksum(saved):
    """A correctly checksummed artefact holding anything but plain arrays is still refused."""
    from sklearn.linear_model import LogisticRegression
    import hashlib

    artefact, meta_path = saved
    sio.dump({"format": "guard-model/1", "x": LogisticRegression()}, artefact, compression=zipfile.ZIP_DEFLATED)
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(artefact.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="outside the trusted list"):
        load_model(artefact)
    assert "sklearn.linear_model._logistic.LogisticRegression" not in TRUSTED_TYPES


def test_wrong_content_is_refused(saved):
    import hashlib

    artefact, meta_path = saved
    sio.dump({"format": "guard-model/1", "feature_version": str(F.FEATURE_VERSION)}, artefact)
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(artefact.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a guard model"):
        load_model(artefact)


def test_names(saved):
    artefact, meta_path = saved
    assert artefact.name == ARTEFACT_NAME and meta_path.name == METADATA_NAME


def test_strict_reader_agrees_with_skops(saved):
    """guard reads the artefact with its own strict skops reader; skops itself must read the same state."""
    from guard.classification.model import read_skops

    artefact, _ = saved
    ours = read_skops(artefact.read_bytes())
    theirs = sio.load(artefact, trusted=list(TRUSTED_TYPES))
    assert sio.get_untrusted_types(file=artefact) == []
    assert set(ours) == set(theirs)
    for k, v in ours.items():
        if isinstance(v, np.ndarray):
            assert v.dtype == theirs[k].dtype and np.array_equal(v, theirs[k]), k
        else:
            assert v == theirs[k], k


def test_scoring_does_not_import_sklearn(saved, tmp_path):
    """Loading and scoring need numpy only: scikit-learn/scipy/skops stay out of the scorer's memory."""
    import subprocess
    import sys

    artefact, _ = saved
    code = (
        "import sys; from guard.classification.model import load_model; from guard.mail.message import parse;"
        f"m = load_model({str(artefact)!r}); m.scam_probability(parse(b'Subject: x\\n\\nhello there'));"
        "bad = [n for n in ('sklearn', 'scipy', 'skops') if n in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                         env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2])})
    assert res.returncode == 0, res.stdout + res.stderr
