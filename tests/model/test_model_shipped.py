"""The shipped artefact (models/guard-model.skops): verified, small, and sensible on the bundled samples."""

from __future__ import annotations

import json
import tomllib

import pytest

from guard.classification.assemble import build_classifier
from guard.mail.message import parse
from guard.classification.model import ARTEFACT_NAME, BUCKETS, METADATA_NAME, OPERATING_THRESHOLD, load_model
from guard.classification.model_loader import load_default_model
from guard.paths import samples_dir, shipped

ARTEFACT = shipped("models") / ARTEFACT_NAME
pytestmark = pytest.mark.skipif(not ARTEFACT.is_file(), reason="no shipped model (run `guard train`)")


@pytest.fixture(scope="module")
def model():
    return load_model(ARTEFACT)


def test_default_loader_finds_and_verifies_it(settings):
    assert load_default_model(settings) is not None


def test_small_enough_to_commit():
    assert ARTEFACT.stat().st_size < 10_000_000


def test_metadata_describes_it():
    meta = json.loads((shipped("models") / METADATA_NAME).read_text())
    assert meta["training"]["label_counts"]["own"]["scam"] > 0
    assert meta["training"]["data_hashes"]["own_train"]
    assert [b["rule"] for b in meta["thresholds"]["buckets"]] == [b[0] for b in BUCKETS]


def _samples():
    return sorted(samples_dir().glob("*.eml"))


@pytest.mark.parametrize("path", _samples(), ids=lambda p: p.name)
def test_samples_score_sensibly(model, path):
    p = model.scam_probability(parse(path.read_bytes()))
    if path.name.startswith("scam-"):
        assert p >= OPERATING_THRESHOLD, f"{path.name}: P(scam) {p:.3f}"
    elif path.name.startswith(("inquiry-", "other-")):
        assert p < 0.5, f"{path.name}: P(scam) {p:.3f}"
    assert 0.0 <= p <= 1.0


def test_full_verdict_on_samples(settings, ruleset, model):
    clf = build_classifier(settings, model=model, ruleset=ruleset)
    for path in _samples():
        v = clf.classify(parse(path.read_bytes()))
        assert v.model_p is not None
        if path.name.startswith("scam-"):
            assert v.category == "scam", (path.name, v.category)
        elif path.name.startswith(("inquiry-", "other-")):
            assert v.category not in ("scam", "suspicious"), (path.name, v.category)


def test_bucket_rules_match_the_model_module():
    """rules/50_model.toml and guard.classification.model.BUCKETS (used by `guard evaluate`) state the same buckets."""
    data = tomllib.loads((shipped("rules") / "50_model.toml").read_text(encoding="utf-8"))
    rules = {r["id"]: r for r in data["rule"] if r["match"]["type"] == "model"}
    assert set(rules) == {b[0] for b in BUCKETS}
    for rid, lo, hi, score in BUCKETS:
        r = rules[rid]
        assert r["match"]["min"] == lo and r["match"].get("max", 1.0000001) == hi and r["score"] == score, rid


def test_model_alone_cannot_make_a_scam_verdict(settings):
    top = max(score for *_, score in BUCKETS)
    assert top < settings.thresholds.scam
