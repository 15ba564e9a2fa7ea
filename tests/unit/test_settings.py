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
        (GOOD + "\ntypo_key = 3\n", "typo_key", "Extra inputs"),
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
