"""Configuration: TOML + GUARD_* environment, validated with clear errors."""

from __future__ import annotations

import pytest

from guard.cli.main import main
from guard.errors import ConfigError
from guard.settings import load_settings

GOOD = """
[institute]
name = "Institut Example"
short_name = "IEX"
official_domains = ["iex.example.org"]
events_address = "events@iex.example.org"
[institute.coordinator]
name = "Ana Example"
address = "ana@iex.example.org"

[[events]]
id = "ws-2026"
name = "Winter Workshop on Examples"
aliases = ["WWE26"]
start = 2026-02-02
end = 2026-02-06
"""


def test_bundled_sample_institute_loads():
    s = load_settings()
    assert s.institute.coordinator.address == "nhernandez@crm.cat"
    assert "crm.cat" in s.official_domains()


def test_file_and_environment(tmp_path, monkeypatch):
    f = tmp_path / "guard.toml"
    f.write_text(GOOD, encoding="utf-8")
    monkeypatch.setenv("GUARD_INSTITUTE__NAME", "Institut Renamed")
    s = load_settings(f)
    assert s.institute.name == "Institut Renamed"
    assert s.events[0].aliases == ["WWE26"]
    assert "wwe26" in s.protected_names()


@pytest.mark.parametrize(
    "bad,key,reason",
    [
        (GOOD.replace('address = "ana@iex.example.org"', 'address = "not-an-address"'), "institute.coordinator.address", "not a valid e-mail"),
        (GOOD.replace('official_domains = ["iex.example.org"]', 'official_domains = ["no dots"]'), "institute.official_domains", "not a domain"),
        (GOOD.replace("end = 2026-02-06", "end = 2026-01-01"), "events.0", "before start"),
        (GOOD + "\n[thresholds]\nscam = 1.0\nsuspicious = 3.0\n", "thresholds", "must not exceed"),
        (GOOD + "\ntypo_key = 3\n", "typo_key", "unknown key"),
        (GOOD.replace('short_name = "IEX"\n', ""), "institute.short_name", "Field required"),
    ],
)
def test_errors_name_file_key_reason(tmp_path, bad, key, reason):
    f = tmp_path / "guard.toml"
    f.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_settings(f)
    text = str(exc.value)
    assert str(f) in text and key in text and reason in text


def test_invalid_toml(tmp_path):
    f = tmp_path / "guard.toml"
    f.write_text("[institute\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(f)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_check_config_command(tmp_path, capsys):
    f = tmp_path / "guard.toml"
    f.write_text(GOOD, encoding="utf-8")
    assert main(["--config", str(f), "check-config", "--no-model"]) == 0
    assert "configuration OK" in capsys.readouterr().out
    f.write_text(GOOD.replace('address = "ana@iex.example.org"', 'address = "nope"'), encoding="utf-8")
    assert main(["--config", str(f), "check-config", "--no-model"]) == 2
    err = capsys.readouterr().err
    assert "institute.coordinator.address" in err and str(f) in err


def test_check_config_validates_policy(tmp_path, capsys):
    policy = tmp_path / "policy.toml"
    policy.write_text("[[row]]\nid = \"x\"\nwhen = { category = \"nonsense\" }\n", encoding="utf-8")
    f = tmp_path / "guard.toml"
    f.write_text(GOOD + f'\n[daemon]\npolicy_file = "{policy}"\n', encoding="utf-8")
    assert main(["--config", str(f), "check-config", "--no-model"]) == 2
    assert "policy.toml" in capsys.readouterr().err


# -- issue 18: errors say where a value came from ---------------------------------------------------------


def test_a_bad_environment_variable_is_reported_as_that_variable(tmp_path, monkeypatch):
    f = tmp_path / "guard.toml"
    f.write_text(GOOD + "\n[daemon]\nmax_attempts = 3\n", encoding="utf-8")
    monkeypatch.setenv("GUARD_DAEMON__MAX_ATTEMPTS", "many")
    monkeypatch.setenv("GUARD_HEALTH__PORT", "99999")
    with pytest.raises(ConfigError) as exc:
        load_settings(f)
    lines = str(exc.value).splitlines()
    assert any(line.startswith("environment variable GUARD_DAEMON__MAX_ATTEMPTS: daemon.max_attempts: ")
               for line in lines), lines
    assert any(line.startswith("environment variable GUARD_HEALTH__PORT: health.port: ") for line in lines), lines
    assert not any(line.startswith(str(f)) for line in lines), "the file is not to blame"


def test_a_file_error_beside_an_environment_table_still_names_the_file(tmp_path, monkeypatch):
    f = tmp_path / "guard.toml"
    f.write_text(GOOD + '\n[health]\nhost = "8.8.8.8"\n', encoding="utf-8")
    monkeypatch.setenv("GUARD_HEALTH__ENABLED", "true")
    with pytest.raises(ConfigError) as exc:
        load_settings(f)
    assert str(exc.value).startswith(f"{f}: health.host: "), str(exc.value)


def test_an_environment_variable_naming_no_setting_is_an_error(tmp_path, monkeypatch):
    f = tmp_path / "guard.toml"
    f.write_text(GOOD, encoding="utf-8")
    monkeypatch.setenv("GUARD_INSTITUT__NAME", "x")
    with pytest.raises(ConfigError, match=r"environment variable GUARD_INSTITUT__NAME: institut: unknown setting; "
                                          r"did you mean GUARD_INSTITUTE__NAME\?"):
        load_settings(f)
    monkeypatch.delenv("GUARD_INSTITUT__NAME")
    monkeypatch.setenv("GUARD_FULL", "1")  # the test suite's own switches (no __) are not settings
    assert load_settings(f).institute.short_name == "IEX"


@pytest.mark.parametrize("extra,line", [
    ('\n[imap]\nhost = "imap.example.org"\nusername = "u"\npassword = "p"\nidle_secnds = 60\n',
     "imap.idle_secnds: unknown key; did you mean idle_seconds?"),
    ("\n[daemon]\nbatch_sise = 10\n", "daemon.batch_sise: unknown key; did you mean batch_size?"),
    ("\n[thresholds]\nscamm = 5.0\n", "thresholds.scamm: unknown key; did you mean scam?"),
    ("^event_dirs = []\n", "event_dirs: unknown key; did you mean events_dirs?"),
    ("\n[logging]\nzzz = 1\n", "logging.zzz: unknown key"),
])
def test_unknown_keys_suggest_the_closest_known_one(tmp_path, extra, line):
    f = tmp_path / "guard.toml"
    f.write_text(extra[1:] + GOOD if extra.startswith("^") else GOOD + extra, encoding="utf-8")  # ^: a top-level key
    with pytest.raises(ConfigError) as exc:
        load_settings(f)
    assert f"{f}: {line}" in str(exc.value).splitlines(), str(exc.value)


def test_unknown_key_in_a_list_of_tables(tmp_path):
    f = tmp_path / "guard.toml"
    f.write_text(GOOD.replace('aliases = ["WWE26"]', 'alias = ["WWE26"]'), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"events\.0\.alias: unknown key; did you mean aliases\?"):
        load_settings(f)


def test_smtp_connections_default_and_bounds():
    from guard.settings import SmtpSettings

    assert SmtpSettings(host="smtp.example.org").connections == 4
    assert SmtpSettings(host="smtp.example.org", connections=1).connections == 1
    for bad in (0, 17):
        with pytest.raises(Exception, match="connections"):
            SmtpSettings(host="smtp.example.org", connections=bad)
