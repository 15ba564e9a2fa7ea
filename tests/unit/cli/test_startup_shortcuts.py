"""The start-up shortcuts of issue 16 (the one-shot `guard classify` path) give what the long way gives.

* the language model's tokenizer as n-gram tables (guard/mail/language.py) counts the same features
  as py3langid's DFA, on real text and on arbitrary bytes;
* settings read from a file alone are validated without pydantic-settings (guard/settings.py): the
  same settings, the same errors; anything else (environment, secrets, arguments) takes the long way;
* models read from guard's cache (guard/classification/model_loader.py) are the verified ones, and a
  modified artefact is still refused.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from guard.paths import samples_dir, shipped

REPO = Path(__file__).resolve().parents[3]


# -- language: n-gram tables against the DFA ------------------------------------------------------


@pytest.fixture(scope="module")
def identifiers(tmp_path_factory):
    """(py3langid's DFA identifier for our languages, the tables one read back from a cache)."""
    import py3langid.langid as L

    from guard.mail import language

    dfa = language._load_restricted(L.LanguageIdentifier, L.MODEL_DIR / L.MODEL_FILE, language.LANGUAGES)
    where = tmp_path_factory.mktemp("langid") / "entry"
    language._save_cached(dfa, where)
    assert (where / "suffix.npz").is_file(), "the DFA was not recognised as a suffix automaton"
    tables = language._load_cached(L.LanguageIdentifier, where)
    assert tables is not None and hasattr(tables, "_suffix")
    return dfa, tables


def _texts() -> list[str | bytes]:
    from guard.mail.message import parse

    out: list[str | bytes] = ["", "ok", "a", "\x00\x01", bytes(range(256)), b"\xff\xfe" * 40,
                              "Ünïcödé 日本語テキスト ελληνικά русский العربية", "ABC DEF GHI UPPER CASE ONLY"]
    for p in sorted(samples_dir().glob("*.eml")) + sorted((REPO / "models" / "corpus").glob("train/*/*.eml"))[::25]:
        raw = p.read_bytes()
        msg = parse(raw)
        out += [raw[:3000], msg.subject + "\n" + msg.text[:3000]]
    rng = random.Random(16)
    out += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(100)]
    return out


def test_tables_count_what_the_dfa_counts(identifiers):
    import py3langid.langid as L

    dfa, tables = identifiers
    for text in _texts():
        encoded = dfa._encode(text)
        expected = L.visit_counts(dfa.tk_nextmove, dfa._rowbase, dfa.tk_output, encoded)
        got = tables._suffix.visits(encoded)
        assert (expected is None and got is None) or list(expected.items()) == list(got.items()), text[:60]
        assert dfa.classify(text) == tables.classify(text)


def test_detect_uses_the_cache_and_agrees(identifiers):
    from guard.mail import language

    _, tables = identifiers
    for text in ("Bon dia, voldria saber si hi ha allotjament al campus", "Dear organisers, is registration open?"):
        lang, prob = tables.classify(text)
        assert language.detect(text) == (lang if prob >= 0.5 else "und")


# -- settings: the file-only path against pydantic-settings ----------------------------------------


def _both(file: Path):
    from guard import settings as S

    data = S.read_toml(file)
    out = []
    for build in (lambda: S.GuardSettings.model_validate(data), lambda: S._settings_class(file)(_secrets_dir=None)):
        try:
            out.append(("ok", build().model_dump()))
        except S.ValidationError as exc:
            out.append(("error", [(e["loc"], e["type"], e["msg"]) for e in exc.errors()]))
    return out


@pytest.mark.parametrize("extra", [
    "",
    '[imap]\nhost = "imap.example.org"\nusername = "x@crm.cat"\nidle_secnds = 5\n',
    '[thresholds]\nscam = 1.0\nsuspicious = 2.0\n',
    'foo = 1\n',
    '[[events]]\nid = "x"\nname = "Some event"\nstart = 2026-05-02\nend = 2026-05-01\n',
    '[digest]\ntimezone = "Mars/Olympus"\n[health]\nhost = "10.0.0.1"\n',
    '[daemon.folders]\nreview = "INBOX"\n',
])
def test_file_only_validation_is_pydantic_settings_validation(tmp_path, extra):
    base = (REPO / "guard" / "defaults.toml").read_text(encoding="utf-8")
    base = base.replace('events_dirs = ["shipped"]', f'events_dirs = ["{shipped("events").as_posix()}"]')
    for variant in (base, base.replace("events@crm.cat", "not an address"),
                    base.replace("nhernandez@crm.cat", "NHernandez@CRM.CAT")):
        f = tmp_path / "guard.toml"
        f.write_text(variant + "\n" + extra, encoding="utf-8")
        fast, slow = _both(f)
        assert fast == slow


def test_file_only_path_is_taken_only_for_a_file_alone(monkeypatch, tmp_path):
    from guard import settings as S

    data = S.read_toml(S.bundled_config())
    for var in [v for v in list(__import__("os").environ) if v.upper().startswith("GUARD_")]:
        monkeypatch.delenv(var)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert S._file_only(data, {})
    assert not S._file_only(data, {"daemon": {}})
    assert not S._file_only({**data, "Institute": data["institute"]}, {})
    monkeypatch.setenv("GUARD_CACHE_DIR", str(tmp_path))  # not a setting
    assert S._file_only(data, {})
    monkeypatch.setenv("GUARD_INSTITUTE__NAME", "Other Institute")
    assert not S._file_only(data, {})
    assert S.load_settings().institute.name == "Other Institute"
    monkeypatch.delenv("GUARD_INSTITUTE__NAME")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert not S._file_only(data, {})


def test_addresses_are_checked_and_explained_by_email_validator():
    from guard import settings as S

    assert S._check_address("Events@CRM.cat") == "events@crm.cat"
    with pytest.raises(ValueError, match="is not a valid e-mail address: An email address must have an @-sign"):
        S._check_address("not an address")


# -- models: the cache holds what the verified loader gave ---------------------------------------


def _copy_models(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for name in ("guard-model.skops", "guard-model.json", "guard-intent.npz", "guard-intent.json"):
        shutil.copy(shipped("models") / name, d / name)
    return d


def test_models_from_the_cache_are_the_verified_ones(monkeypatch, tmp_path):
    from guard.classification import intent, model
    from guard.classification import model_loader as ml
    from guard.mail.message import parse

    monkeypatch.setenv("GUARD_CACHE_DIR", str(tmp_path / "cache"))
    d = _copy_models(tmp_path)
    ref_scam, ref_intent = model.load_model(d / "guard-model.skops"), intent.load(d / "guard-intent.npz")
    first = ml.load_scam_model(d / "guard-model.skops"), ml.load_intent_model(d / "guard-intent.npz")
    assert len(list((tmp_path / "cache").glob("model-*"))) == 2
    cached = ml.load_scam_model(d / "guard-model.skops"), ml.load_intent_model(d / "guard-intent.npz")
    for scam, intent_model in (first, cached):
        assert np.array_equal(scam.coef, ref_scam.coef) and scam.metadata == ref_scam.metadata
        assert (scam.intercept, scam.calib_a, scam.calib_b) == (ref_scam.intercept, ref_scam.calib_a, ref_scam.calib_b)
        assert np.array_equal(intent_model.coef, ref_intent.coef) and np.array_equal(intent_model._coef_t, ref_intent._coef_t)
        assert np.array_equal(intent_model.intercept, ref_intent.intercept) and intent_model.metadata == ref_intent.metadata
        for p in sorted(samples_dir().glob("*.eml")):
            msg = parse(p.read_bytes())
            assert scam.scam_probability(msg) == ref_scam.scam_probability(msg)
            args = (msg, {"scam": 1.0}, 0.5, None)
            assert intent_model.probabilities(*args) == ref_intent.probabilities(*args)


def test_a_modified_artefact_is_refused_although_cached(monkeypatch, tmp_path):
    from guard.classification import model_loader as ml
    from guard.errors import ModelError

    monkeypatch.setenv("GUARD_CACHE_DIR", str(tmp_path / "cache"))
    d = _copy_models(tmp_path)
    ml.load_scam_model(d / "guard-model.skops")
    ml.load_intent_model(d / "guard-intent.npz")
    for name in ("guard-model.skops", "guard-intent.npz"):
        p = d / name
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        st = p.stat()
        p.write_bytes(bytes(data))
        __import__("os").utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same time
    with pytest.raises(ModelError, match="SHA-256"):
        ml.load_scam_model(d / "guard-model.skops")
    with pytest.raises(ModelError, match="SHA-256"):
        ml.load_intent_model(d / "guard-intent.npz")
