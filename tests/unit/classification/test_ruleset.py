"""Loading rule files: validation errors name file, rule id and reason; site-local overrides."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from guard.errors import RuleError
from guard.mail.message import parse
from guard.paths import shipped
from guard.classification.ruleset import load_ruleset

GOOD = '''
[[rule]]
id = "TEST_RULE"
description = "A test rule about hotels"
score = 1.0
tags = ["scam"]
[rule.match]
type = "phrases"
phrases = ["hotel"]
[rule.examples]
match = ["Subject: x\\n\\nhotel"]
no_match = ["Subject: x\\n\\nnothing"]
'''


def _write(tmp_path: Path, name: str, text: str) -> Path:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text, encoding="utf-8")
    return d


def test_good_file_loads(tmp_path):
    rs = load_ruleset(_write(tmp_path, "a.toml", GOOD))
    assert [r.id for r in rs.rules] == ["TEST_RULE"]


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda s: s.replace('id = "TEST_RULE"', 'id = "bad-id"'), "id"),
        (lambda s: s.replace('type = "phrases"', 'type = "telepathy"'), "match"),
        (lambda s: s.replace('phrases = ["hotel"]', 'phrases = []'), "phrases"),
        (lambda s: s.replace('no_match = ["Subject: x\\n\\nnothing"]', ""), "no_match"),
        (lambda s: s.replace('score = 1.0', 'score = "high"'), "score"),
        (lambda s: s + "\nunknown_key = 1\n", "unknown_key"),
        (lambda s: s.replace('type = "phrases"\nphrases = ["hotel"]', 'type = "regex"\npattern = "(unclosed"'), "regular expression"),
        (lambda s: s.replace('type = "phrases"\nphrases = ["hotel"]', 'type = "meta"\nall = ["NOPE"]'), "unknown rule NOPE"),
    ],
)
def test_bad_rule_names_file_id_and_reason(tmp_path, mutate, needle):
    d = _write(tmp_path, "bad.toml", mutate(GOOD))
    with pytest.raises(RuleError) as exc:
        load_ruleset(d)
    text = str(exc.value)
    assert "bad.toml" in text and needle in text


def test_bad_toml_syntax(tmp_path):
    with pytest.raises(RuleError, match="bad.toml: not valid TOML"):
        load_ruleset(_write(tmp_path, "bad.toml", "[[rule]\nid="))


def test_duplicate_id_in_shipped_files(tmp_path):
    _write(tmp_path, "a.toml", GOOD)
    d = _write(tmp_path, "b.toml", GOOD)
    with pytest.raises(RuleError, match="TEST_RULE: duplicate id"):
        load_ruleset(d)


def test_meta_cycle_is_refused(tmp_path):
    text = GOOD.replace('id = "TEST_RULE"', 'id = "A_RULE"').replace('type = "phrases"\nphrases = ["hotel"]', 'type = "meta"\nall = ["B_RULE"]')
    text += GOOD.replace('id = "TEST_RULE"', 'id = "B_RULE"').replace('type = "phrases"\nphrases = ["hotel"]', 'type = "meta"\nall = ["A_RULE"]')
    with pytest.raises(RuleError, match="cycle"):
        load_ruleset(_write(tmp_path, "a.toml", text))


def test_site_local_overrides_without_editing_shipped(tmp_path, settings):
    local = tmp_path / "local"
    local.mkdir()
    (local / "site.toml").write_text(
        'disable = ["ATTENDEE_LIST_SALE"]\n\n[scores]\nGENERIC_GREETING = 3.0\n\n[lists]\nfreemail = ["uni-mail.example"]\n'
        + GOOD.replace("TEST_RULE", "LOCAL_HOTEL_WORD"),
        encoding="utf-8",
    )
    before = {p.name: p.read_bytes() for p in shipped("rules").glob("*.toml")}
    rs = load_ruleset(shipped("rules"), local)
    ids = {r.id for r in rs.rules}
    assert "ATTENDEE_LIST_SALE" not in ids and "LOCAL_HOTEL_WORD" in ids
    assert rs.by_id("GENERIC_GREETING").score == 3.0
    assert "uni-mail.example" in rs.lists["freemail"] and "gmail.com" in rs.lists["freemail"]
    assert before == {p.name: p.read_bytes() for p in shipped("rules").glob("*.toml")}


def test_local_rule_replaces_shipped_rule_with_same_id(tmp_path, settings):
    local = tmp_path / "local"
    local.mkdir()
    (local / "site.toml").write_text(GOOD.replace("TEST_RULE", "GENERIC_GREETING").replace("score = 1.0", "score = 0.25"), encoding="utf-8")
    rs = load_ruleset(shipped("rules"), local)
    assert rs.by_id("GENERIC_GREETING").score == 0.25
    assert rs.by_id("GENERIC_GREETING").origin.endswith("site.toml")


def test_scores_in_shipped_dir_refused(tmp_path):
    d = _write(tmp_path, "a.toml", GOOD + "\n[scores]\nTEST_RULE = 2\n")
    with pytest.raises(RuleError, match="site-local"):
        load_ruleset(d)


def test_unknown_override_refused(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "x.toml").write_text('disable = ["NO_SUCH_RULE"]\n', encoding="utf-8")
    with pytest.raises(RuleError, match="x.toml: rule NO_SUCH_RULE: disable names an unknown rule"):
        load_ruleset(shipped("rules"), local)


def test_internal_rules_score_nothing_and_are_hidden(classifier):
    v = classifier.classify(parse(b"From: Conference Committee <cc@gmail.com>\nSubject: Hotel\n\nDear speaker, confirm your dates of stay."))
    assert all(not r.rule.startswith("__") for r in v.reasons)
    assert "FREEMAIL_ORGANISER" in {r.rule for r in v.reasons}


def test_policy_toml_is_not_read_as_rules(tmp_path):
    d = tmp_path / "rules"
    shutil.copytree(shipped("rules"), d)
    (d / "policy.toml").write_text("[[row]]\nwhatever = 1\n", encoding="utf-8")
    assert load_ruleset(d).rules
