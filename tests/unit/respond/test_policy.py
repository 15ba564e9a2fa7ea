"""The decision table: the shipped policy's plans, first match wins, and validation errors."""

from __future__ import annotations

import pytest

from guard.errors import ConfigError
from guard.paths import shipped
from guard.respond.policy import Plan, decide, load_policy, parse_policy
from guard.respond.render import Renderer
from guard.classification.verdict import Verdict

TEMPLATES = Renderer(shipped("templates")).templates()
POLICY = load_policy(shipped("rules") / "policy.toml", templates=TEMPLATES)


def plan_for(category, *, inner=None, paid=False) -> Plan:
    return decide(POLICY, Verdict(category, 0.0, inner=Verdict(inner, 0.0) if inner else None, paid=paid))


def test_scam_is_quarantined_and_never_answered():
    p = plan_for("scam")
    assert p.describe() == ["move:quarantine"] and p.sends == ()


def test_report_of_a_scam_gets_a_verdict_reply():
    p = plan_for("report", inner="scam")
    assert p.describe() == ["reply:report_verdict", "move:routed"]
    assert plan_for("report", inner="suspicious").row == "report-scam"


def test_paid_report_alerts_and_replies_first_match_wins():
    p = plan_for("report", inner="scam", paid=True)
    assert p.row == "report-paid"
    assert p.describe() == ["alert:coordinator_alert", "reply:report_paid", "move:review", "flag"]
    assert p.flag and p.folder == "review"


def test_unclear_report_is_answered_and_reviewed():
    for inner in ("other", "inquiry", None):
        p = plan_for("report", inner=inner)
        assert p.row == "report-unclear"
        assert p.describe() == ["reply:report_verdict", "forward:forward_summary:review", "move:review"]


def test_inquiry_is_forwarded_and_acknowledged():
    assert plan_for("inquiry").describe() == ["forward:forward_summary", "reply:inquiry_ack", "move:routed"]


def test_automated_is_filed_never_answered():
    p = plan_for("automated")
    assert p.describe() == ["move:automated"] and p.sends == ()


def test_suspicious_is_forwarded_for_review_without_reply():
    p = plan_for("suspicious")
    assert p.describe() == ["forward:forward_summary:review", "move:review"]
    assert not any(a.do == "reply" for a in p.actions)


def test_other_goes_to_the_configurable_other_folder():
    assert plan_for("other").folder == "other"


def _base_rows(extra_first: list[dict] | None = None) -> dict:
    rows = [{"id": c, "when": {"category": c}, "actions": []}
            for c in ("scam", "suspicious", "report", "inquiry", "automated", "other")]
    return {"version": 1, "row": (extra_first or []) + rows}


def test_first_matching_row_wins():
    data = _base_rows([{"id": "inq-first", "when": {"category": ["inquiry", "report"]},
                        "actions": [{"do": "move", "folder": "routed"}]}])
    pol = parse_policy(data, "p.toml", templates=TEMPLATES)
    assert decide(pol, Verdict("report", 0)).row == "inq-first"
    assert decide(pol, Verdict("scam", 0)).row == "scam"


@pytest.mark.parametrize("bad_row,needle", [
    ({"id": "x", "when": {"category": "scam"}, "actions": [{"do": "reply", "template": "inquiry_ack"}]},
     "row 1 (x): a reply here could answer scam"),
    ({"id": "x", "actions": [{"do": "reply", "template": "inquiry_ack"}]}, "could answer automated and scam"),
    ({"id": "x", "when": {"category": "inquiry"}, "actions": [{"do": "reply", "template": "nope"}]},
     "row 1 (x): unknown template 'nope'"),
    ({"id": "x", "when": {"category": "inquiry"}, "actions": [{"do": "move"}]},
     "row 1 (x): actions.0: folder goes with move"),
    ({"id": "x", "when": {"category": "inquiry"}, "actions": [{"do": "move", "folder": "attic"}]},
     "row 1 (x): actions.0.folder"),
    ({"id": "x", "when": {"category": "inquiry"}, "actions": [{"do": "explode"}]}, "row 1 (x): actions.0.do"),
    ({"id": "x", "when": {"categry": "inquiry"}}, "row 1 (x): when.categry: Extra inputs are not permitted"),
    ({"id": "x", "when": {"category": "spam"}}, "row 1 (x): when.category.0"),
    ({"id": "Bad Id"}, "row 1 (Bad Id): id"),
])
def test_bad_rows_name_file_row_and_reason(bad_row, needle):
    with pytest.raises(ConfigError) as exc:
        parse_policy(_base_rows([bad_row]), "site/policy.toml", templates=TEMPLATES)
    assert str(exc.value).startswith("site/policy.toml: ")
    assert needle in str(exc.value)


def test_every_category_must_be_decided():
    data = _base_rows()
    data["row"] = [r for r in data["row"] if r["id"] != "automated"]
    with pytest.raises(ConfigError, match="no row decides category 'automated'"):
        parse_policy(data, "p.toml")


def test_duplicate_row_ids_are_refused():
    data = _base_rows([{"id": "scam", "when": {"category": "scam"}}])
    with pytest.raises(ConfigError, match=r"row 2 \(scam\): duplicate row id"):
        parse_policy(data, "p.toml")


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "policy.toml"
    bad.write_text("[[row]\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid TOML"):
        load_policy(bad)


def test_shipped_policy_only_uses_existing_templates():
    assert POLICY.templates() <= TEMPLATES
