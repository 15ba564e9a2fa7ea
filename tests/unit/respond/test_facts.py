"""Event fact sheets: loading and validation, merging with the configuration, feeding the rules, and
working out which event a message is about."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from guard.classification.assemble import load_rules, rule_context
from guard.errors import ConfigError
from guard.respond.facts import (
    detect_event,
    format_dates,
    localised,
    mentioned_dates,
)
from guard.mail.message import parse
from guard.paths import shipped
from guard.settings import Event, load_fact_sheet, load_fact_sheets, load_settings

SHIPPED = load_fact_sheets([shipped("events")])
BY_ID = {e.id: e for e in SHIPPED}

CONFIG = """
events_dirs = ["sheets"]

[institute]
name = "Institut Example"
short_name = "IEX"
official_domains = ["iex.example.org"]
events_address = "events@iex.example.org"
[institute.coordinator]
name = "Ana Example"
address = "ana@iex.example.org"
"""

SHEET = """
id = "spring-school"
name = "Spring School on Examples"
aliases = ["SSE 2026", "sse2026"]
protected_names = ["springschool"]
start = 2026-04-13
end = 2026-04-17
venue = "Main hall"
url = "https://iex.example.org/sse"
official_domains = ["sse.example.net"]
registration = { en = "Register online.", es = "Inscríbase en línea.", ca = "Inscriviu-vos en línia." }
lodging = "Book yourself."
[coordinator]
name = "Bo Example"
address = "bo@iex.example.org"
"""


def _msg(subject: str, body: str, inner: bytes | None = None):
    head = f"From: pat@example.org\r\nTo: events@crm.cat\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
    if inner is None:
        return parse((head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode("utf-8"))
    return parse((head + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; "
                  "charset=utf-8\r\n\r\n" + body + "\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n").encode("utf-8")
                 + inner + b"\r\n--b--\r\n")


# -- the shipped sheets ---------------------------------------------------------------------


def test_one_sheet_per_seed_event():
    assert set(BY_ID) == {"mfml-2026", "birs-25w5430", "pde-ip-ml-minisymposium-2026", "pde-ml-2024",
                          "milan-workshop-2026"}
    mfml = BY_ID["mfml-2026"]
    assert (mfml.start, mfml.end) == (dt.date(2026, 1, 7), dt.date(2026, 1, 9))
    assert mfml.coordinator.address == "nhernandez@crm.cat" and mfml.official_domains == ["crm.cat"]
    langs = {"en", "es", "ca", "fr", "de", "it", "pt"}
    assert set(mfml.registration) == langs and set(mfml.lodging) == langs
    birs = BY_ID["birs-25w5430"]
    assert (birs.start, birs.end) == (dt.date(2025, 6, 29), dt.date(2025, 7, 4)) and "birs.ca" in birs.official_domains


def test_bundled_settings_load_the_shipped_sheets_and_feed_the_rules():
    s = load_settings()
    assert {e.id for e in s.events} == set(BY_ID)
    assert {"crm.cat", "birs.ca"} <= set(s.official_domains())
    assert {"mfml2026", "birs"} <= set(s.protected_names())
    ctx = rule_context(s, load_rules(s))
    assert "birs.ca" in ctx.official_domains and "birs.ca" in ctx.lists["official"]
    assert "mfml2026" in ctx.official_names
    assert "wasserstein gradient flows in math and machine learning" in ctx.display_names


def test_wheel_ships_the_sheets():
    text = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    assert '"events" = "guard/_shipped/events"' in text
    assert shipped("events").is_dir()


# -- loading, validation, merging ------------------------------------------------------------


def _config(tmp_path, sheet: str = SHEET, extra: str = "") -> Path:
    (tmp_path / "sheets").mkdir(exist_ok=True)
    (tmp_path / "sheets" / "spring-school.toml").write_text(sheet, encoding="utf-8")
    f = tmp_path / "guard.toml"
    f.write_text(CONFIG + extra, encoding="utf-8")
    return f


def test_sheets_are_merged_with_the_configuration(tmp_path):
    s = load_settings(_config(tmp_path))
    (e,) = s.events
    assert e.id == "spring-school" and e.coordinator.name == "Bo Example"
    assert "sse.example.net" in s.official_domains()
    assert {"springschool", "sse2026"} <= set(s.protected_names())
    assert "bo example" in s.display_names()


def test_configured_event_wins_over_a_sheet_with_the_same_id(tmp_path):
    extra = '\n[[events]]\nid = "spring-school"\nname = "Spring School (configured)"\n'
    s = load_settings(_config(tmp_path, extra=extra))
    assert [e.name for e in s.events] == ["Spring School (configured)"]


def test_no_sheets_without_events_dirs(tmp_path):
    f = _config(tmp_path)
    f.write_text(CONFIG.replace('events_dirs = ["sheets"]', ""), encoding="utf-8")
    assert load_settings(f).events == []


@pytest.mark.parametrize("bad,key,reason", [
    (SHEET.replace("end = 2026-04-17", "end = 2026-04-01"), "(top level)", "before start"),
    (SHEET.replace('official_domains = ["sse.example.net"]', 'official_domains = ["not a domain"]'),
     "official_domains", "not a domain name"),
    (SHEET.replace('address = "bo@iex.example.org"', 'address = "bo"'), "coordinator.address", "not a valid e-mail"),
    (SHEET.replace("venue = ", 'hotel = "x"\nvenue = '), "hotel", "Extra inputs"),
    (SHEET.replace('id = "spring-school"', 'id = "Spring School"'), "id", "pattern"),
    (SHEET.replace('url = "https://iex.example.org/sse"', 'url = "javascript:alert(1)"'), "url", "pattern"),
    (SHEET.replace('es = "Inscríbase en línea."', 'spanish = "x"'), "registration", "two-letter"),
    (SHEET.replace('name = "Spring School on Examples"\n', ""), "name", "Field required"),
    (SHEET.replace("start = 2026-04-13", "start = 2026-13-45"), "(top level)", "not valid TOML"),
], ids=["dates", "domain", "coordinator", "unknown-key", "id", "url", "language-key", "name", "toml"])
def test_bad_sheet_names_file_key_and_reason(tmp_path, bad, key, reason):
    f = _config(tmp_path, sheet=bad)
    with pytest.raises(ConfigError) as exc:
        load_settings(f)
    text = str(exc.value)
    assert "spring-school.toml" in text and reason in text
    if key != "(top level)":
        assert f": {key}" in text


def test_duplicate_ids_across_sheets(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.toml").write_text(SHEET, encoding="utf-8")
    (d / "b.toml").write_text(SHEET, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"b\.toml: id: event id 'spring-school' is also used by .*a\.toml"):
        load_fact_sheets([d])


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="events_dirs"):
        load_fact_sheets([tmp_path / "nowhere"])


def test_sheet_loads_alone(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text(SHEET, encoding="utf-8")
    e = load_fact_sheet(f)
    assert localised(e.registration, "ca") == "Inscriviu-vos en línia."
    assert localised(e.registration, "fr") == "Register online."
    assert localised(e.lodging, "es") == "Book yourself."


# -- which event a message is about ----------------------------------------------------------


@pytest.mark.parametrize("subject,body,expected", [
    ("Question about MFML 2026", "Hello, do I need a visa?", "mfml-2026"),
    ("Visa", "I will attend Mathematical Foundations of Machine Learning: PDEs, Probability, and Dynamics.",
     "mfml-2026"),
    ("Llegada", "Llegaré el 7 de enero de 2026 por la mañana. ¿Dónde es el taller?", "mfml-2026"),
    ("Arribada", "Arribaré el 8 de gener i marxaré el 9 de gener.", "mfml-2026"),
    ("Banff", "About workshop 25w5430 in Banff", "birs-25w5430"),
    ("Dates", "I arrive on June 30, 2025 for the workshop", "birs-25w5430"),
    ("Minisimposio", "Mi charla es el jueves, 22 de enero.", "pde-ip-ml-minisymposium-2026"),
    ("Milan", "I will be at the Milan workshop on 15th June.", "milan-workshop-2026"),
    ("Hello", "A general question about your institute.", None),
    ("Dates", "Is the office open on 3 March?", None),
])
def test_detects_the_event(subject, body, expected):
    e = detect_event(SHIPPED, _msg(subject, body))
    assert (e.id if e else None) == expected


def test_detects_the_event_of_a_forwarded_scam():
    inner = (b"From: Conference Committee <cc@gmail.com>\r\nSubject: Hotel for mfml2026 participants\r\n\r\n"
             b"Book your room now.\r\n")
    e = detect_event(SHIPPED, _msg("Fwd: hotel", "Is this real?", inner))
    assert e is not None and e.id == "mfml-2026"


def test_ambiguous_mentions_give_no_event():
    # names of two events, equally strong: guard does not guess
    assert detect_event(SHIPPED, text="MFML 2026 or 25w5430?") is None
    # a name beats a date of another event
    assert detect_event(SHIPPED, text="MFML 2026; I arrive on 30 June 2025").id == "mfml-2026"


def test_detection_is_pure_and_handles_no_events():
    assert detect_event((), _msg("MFML 2026", "x")) is None
    a = detect_event(SHIPPED, text="MFML 2026")
    b = detect_event(SHIPPED, text="MFML 2026")
    assert a == b


def test_mentioned_dates():
    found = set(mentioned_dates("2026-01-07, June 29th 2025, 4 d'agost, 22 de enero de 2026, 07/01/2026"))
    assert {(2026, 1, 7), (2025, 6, 29), (None, 8, 4), (2026, 1, 22)} <= found


@pytest.mark.parametrize("start,end,lang,expected", [
    (dt.date(2026, 1, 7), dt.date(2026, 1, 9), "en", "7–9 January 2026"),
    (dt.date(2025, 6, 29), dt.date(2025, 7, 4), "en", "29 June – 4 July 2025"),
    (dt.date(2026, 1, 7), dt.date(2026, 1, 9), "es", "del 7 al 9 de enero de 2026"),
    (dt.date(2025, 6, 29), dt.date(2025, 7, 4), "es", "del 29 de junio al 4 de julio de 2025"),
    (dt.date(2026, 1, 7), dt.date(2026, 1, 9), "ca", "del 7 al 9 de gener de 2026"),
    (dt.date(2026, 4, 1), dt.date(2026, 4, 11), "ca", "de l'1 a l'11 d'abril de 2026"),
    (dt.date(2025, 6, 29), dt.date(2025, 7, 4), "ca", "del 29 de juny al 4 de juliol de 2025"),
    (dt.date(2026, 1, 22), None, "es", "22 de enero de 2026"),
    (dt.date(2025, 12, 30), dt.date(2026, 1, 2), "en", "30 December 2025 – 2 January 2026"),
    (None, None, "en", ""),
    (dt.date(2026, 4, 1), dt.date(2026, 4, 1), "ca", "1 d'abril de 2026"),
    (dt.date(2026, 3, 11), dt.date(2026, 4, 1), "ca", "de l'11 de març a l'1 d'abril de 2026"),
    (dt.date(2025, 12, 30), dt.date(2026, 1, 11), "ca", "del 30 de desembre de 2025 a l'11 de gener de 2026"),
    (dt.date(2026, 10, 1), dt.date(2026, 10, 3), "ca", "de l'1 al 3 d'octubre de 2026"),
    (dt.date(2026, 8, 2), dt.date(2026, 8, 11), "ca", "del 2 a l'11 d'agost de 2026"),
    (dt.date(2026, 4, 1), dt.date(2026, 4, 11), "es", "del 1 al 11 de abril de 2026"),
    (dt.date(2025, 12, 30), dt.date(2026, 1, 2), "es", "del 30 de diciembre de 2025 al 2 de enero de 2026"),
    (dt.date(2026, 3, 30), dt.date(2026, 4, 1), "en", "30 March – 1 April 2026"),
    (dt.date(2026, 4, 1), dt.date(2026, 4, 11), "fr", "du 1er au 11 avril 2026"),
    (dt.date(2026, 4, 1), dt.date(2026, 4, 11), "nl", "1–11 April 2026"),  # unknown language: English
    (dt.date(2026, 4, 1), None, "ca", "1 d'abril de 2026"),
])
def test_format_dates(start, end, lang, expected):
    assert format_dates(start, end, lang) == expected


def test_event_model_from_configuration_still_accepts_plain_texts():
    e = Event(id="x-1", name="Some Event", registration="Online.", lodging={"en": "Hotel list."})
    assert localised(e.registration, "ca") == "Online." and localised(e.lodging, "ca") == "Hotel list."
