"""Validated values kept in guard's cache for a one-shot ``guard classify`` (issue 16) are exactly
what validation gives, and anything validation depends on makes them validated again.

* settings read from a file alone (guard/settings.py, _cached_settings): rebuilt with the very same
  values; a changed file, fact sheet, referenced environment variable, unreadable secret file or
  unknown time zone means validation again, with its own errors;
* rule files (guard/classification/ruleset.py, _cached_file): the same specifications; a file with
  an invalid rule is never kept, and its error is the one validation gives;
* the parsed public suffix list (guard/mail/domains.py) and the pydantic plugin search
  (guard/cli/main.py) give what the package's own code gives.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from guard import cache
from guard.errors import ConfigError, RuleError
from guard.paths import bundled_config, shipped

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in [v for v in os.environ if v.upper().startswith("GUARD_")]:
        monkeypatch.delenv(var)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("GUARD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _validated(monkeypatch, cache_dir, path):
    from guard import settings as S

    monkeypatch.setenv("GUARD_CACHE_DIR", "")
    try:
        return S.load_settings(path)
    finally:
        monkeypatch.setenv("GUARD_CACHE_DIR", str(cache_dir))


def _no_validation(monkeypatch):
    """Validation fails loudly: what loads now came from the cache."""
    from guard import settings as S

    def boom(*a, **k):
        raise AssertionError("validated although cached")

    monkeypatch.setattr(S.GuardSettings, "model_validate", boom)
    monkeypatch.setattr(S, "load_fact_sheets", boom)


def _config(tmp_path: Path, extra: str = "", name: str = "guard.toml") -> Path:
    base = bundled_config().read_text(encoding="utf-8")
    base = base.replace('events_dirs = ["shipped"]', f'events_dirs = ["{(tmp_path / "events").as_posix()}"]')
    if not (tmp_path / "events").is_dir():
        shutil.copytree(shipped("events"), tmp_path / "events")
    f = tmp_path / name
    f.write_text(base + "\n" + extra, encoding="utf-8")
    return f


SERVER = """
[imap]
host = "imap.example.org"
username = "events@crm.cat"
password_file = "$GUARD_TEST_SECRETS/imap-password"
[digest]
timezone = "Europe/Madrid"
times = [08:00:00, 17:30:00]
[[events]]
id = "extra"
name = "An extra event"
start = 2026-05-02
"""


def test_settings_from_the_cache_are_the_validated_ones(monkeypatch, clean_env):
    from guard import settings as S

    tmp = clean_env
    (tmp / "secrets").mkdir()
    (tmp / "secrets" / "imap-password").write_text("x")
    monkeypatch.setenv("GUARD_TEST_SECRETS", str(tmp / "secrets"))
    for path in (None, _config(tmp), _config(tmp, SERVER, "server.toml")):
        first = S.load_settings(path)
        validated = _validated(monkeypatch, tmp / "cache", path)
        assert cache.identical(first, validated)
        with monkeypatch.context() as m:
            _no_validation(m)
            again = S.load_settings(path)
        assert cache.identical(again, validated) and again == validated
        assert again.imap is None or again.imap.password_file == tmp / "secrets" / "imap-password"


def test_what_validation_depends_on_is_checked_again(monkeypatch, clean_env):
    from guard import settings as S

    tmp = clean_env
    (tmp / "secrets").mkdir()
    secret = tmp / "secrets" / "imap-password"
    secret.write_text("x")
    monkeypatch.setenv("GUARD_TEST_SECRETS", str(tmp / "secrets"))
    f = _config(tmp, SERVER)
    S.load_settings(f)
    # a fact sheet changed: validated again, with the new sheet
    sheet = sorted((tmp / "events").glob("*.toml"))[0]
    sheet.write_text(sheet.read_text(encoding="utf-8").replace('name = "', 'name = "Renamed ', 1), encoding="utf-8")
    renamed = S.load_settings(f)
    assert cache.identical(renamed, _validated(monkeypatch, tmp / "cache", f))
    assert any(e.name.startswith("Renamed ") for e in renamed.events)
    # the secret file cannot be read any more: the error validation gives
    secret.unlink()
    with pytest.raises(ConfigError) as cached_error:
        S.load_settings(f)
    with pytest.raises(ConfigError) as validated_error:
        _validated(monkeypatch, tmp / "cache", f)
    assert str(cached_error.value) == str(validated_error.value) and "cannot be read" in str(cached_error.value)
    # the variable a path names points elsewhere: validated again, the new path
    (tmp / "other").mkdir()
    (tmp / "other" / "imap-password").write_text("y")
    monkeypatch.setenv("GUARD_TEST_SECRETS", str(tmp / "other"))
    assert S.load_settings(f).imap.password_file == tmp / "other" / "imap-password"
    # an unknown GUARD_ variable is still reported with a cached configuration
    monkeypatch.setenv("GUARD_IMAPP__HOST", "x")
    with pytest.raises(ConfigError, match="GUARD_IMAPP__HOST: imapp: unknown setting"):
        S.load_settings(f)


def test_a_secret_in_the_file_is_never_kept(monkeypatch, clean_env):
    from guard import settings as S

    tmp = clean_env
    f = _config(tmp, '[smtp]\nhost = "smtp.example.org"\nusername = "u"\npassword = "hunter2"\n')
    S.load_settings(f)
    kept = list((tmp / "cache").glob("settings-*")) if (tmp / "cache").is_dir() else []
    assert kept == []
    assert all("hunter2" not in p.read_text(encoding="utf-8", errors="replace")
               for p in (tmp / "cache").glob("*") if p.is_file())
    with pytest.raises(TypeError):
        cache.freeze(S.load_settings(f).smtp)


def test_freeze_keeps_types():
    import datetime as dt

    values = [1, 1.0, True, None, "x", [1, (2.0, "a")], {"k": [dt.date(2026, 1, 2), dt.time(8, 0)]}, Path("/x")]
    again = cache.thaw(__import__("json").loads(__import__("json").dumps(cache.freeze(values))), {})
    assert cache.identical(again, values)
    assert not cache.identical([1], [1.0]) and not cache.identical((1,), [1])


# -- rules -------------------------------------------------------------------------------------------


def test_rules_from_the_cache_are_the_validated_ones(monkeypatch, clean_env):
    from guard.classification import ruleset as R

    tmp = clean_env
    local = tmp / "local"
    local.mkdir()
    (local / "50_local.toml").write_text('disable = ["HOUSING_OFFICIAL_CLAIM"]\n[scores]\nNAMED_SCAM_AGENCY = 1\n')
    first = R.load_ruleset(shipped("rules"), local)
    assert list((tmp / "cache").glob("rulespecs-*"))
    with monkeypatch.context() as m:
        def boom(*a, **k):
            raise AssertionError("validated although cached")

        m.setattr(R.RuleSpec, "model_validate", boom)
        again = R.load_ruleset(shipped("rules"), local)
    monkeypatch.setenv("GUARD_CACHE_DIR", "")
    validated = R.load_ruleset(shipped("rules"), local)
    for rs in (first, again):
        assert [r.id for r in rs.rules] == [r.id for r in validated.rules]
        assert all(cache.identical(a.spec, b.spec) for a, b in zip(rs.rules, validated.rules))
        assert rs.lists == validated.lists and rs.files == validated.files
    assert again.by_id("NAMED_SCAM_AGENCY").score == 1.0


def test_an_invalid_rule_file_is_never_kept(monkeypatch, clean_env):
    from guard.classification import ruleset as R

    tmp = clean_env
    rules = tmp / "rules"
    shutil.copytree(shipped("rules"), rules)
    f = rules / "10_sender.toml"
    f.write_text(f.read_text(encoding="utf-8") + '\n[[rule]]\nid = "bad id"\ndescription = "short"\nscore = 500\n'
                 '[rule.match]\ntype = "regex"\npattern = "(unclosed"\n', encoding="utf-8")
    errors = []
    for _ in range(2):
        with pytest.raises(RuleError) as exc:
            R.load_ruleset(rules)
        errors.append(str(exc.value))
    monkeypatch.setenv("GUARD_CACHE_DIR", "")
    with pytest.raises(RuleError) as exc:
        R.load_ruleset(rules)
    assert errors == [str(exc.value)] * 2
    assert "rule bad id: id: String should match pattern" in errors[0]
    assert R._spec_cache_entry(f) is None or not R._spec_cache_entry(f).exists()


# -- the public suffix list, the pydantic plugin search -------------------------------------------


def test_parsed_suffix_list_is_the_parsers(monkeypatch, clean_env):
    from guard.mail import domains

    domains._psl.cache_clear()
    try:
        first = vars(domains._psl())
        domains._psl.cache_clear()
        again = vars(domains._psl())  # from the cache
        monkeypatch.setenv("GUARD_CACHE_DIR", "")
        domains._psl.cache_clear()
        assert first == again == vars(domains._psl())
    finally:
        domains._psl.cache_clear()


def test_plugin_search_is_skipped_only_when_none_is_installed(monkeypatch, clean_env):
    import sys

    import guard.cli.main  # noqa: F401

    cli = sys.modules["guard.cli.main"]
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    monkeypatch.delitem(sys.modules, "pydantic.plugin._loader", raising=False)
    from importlib.metadata import entry_points

    installed = list(entry_points(group="pydantic"))
    for _ in range(2):  # the search, then the cache
        with cli._no_plugin_search():
            assert (os.environ.get("PYDANTIC_DISABLE_PLUGINS") == "__all__") == (not installed)
        assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ
    where = cli._plugin_cache_entry()
    cache.write_json(where, ["logfire=logfire.integrations.pydantic:plugin"])
    with cli._no_plugin_search():
        assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "some")
    with cli._no_plugin_search():
        assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "some"
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "some"
