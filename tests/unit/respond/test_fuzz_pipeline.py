"""Fuzzing the whole decision pipeline: parse -> classify -> decide -> prepare (reply gate + render).

Generated malformed and hostile messages (tests/strategies.py) must never raise anywhere, under the
plan the policy picks and under every other plan of the policy (so every template renders hostile
input), live and in shadow mode. CI runs FUZZ_CI examples in all; GUARD_FULL=1 runs 100,000
(``GUARD_FULL=1 pytest tests/unit/respond/test_fuzz_pipeline.py -s`` prints the count).
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import addressed_messages, fuzz_examples, messages

from guard.daemon.service import build_env, load_policy_and_templates
from guard.mail.message import parse
from guard.respond.prepare import prepare
from guard.respond.policy import decide
from guard.respond.reply_gate import ReplyHistory

FUZZ_CI = 6_000  # per module: half for each test; GUARD_FULL: 50,000 per test
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
COUNT = {"n": 0, "sent": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_count():
    yield
    print(f"\nfuzz: {COUNT['n']} generated messages through parse, classify, decide and render; "
          f"{COUNT['sent']} replies/forwards/alerts rendered; no exception")


@pytest.fixture(scope="module")
def pipeline(settings):
    policy, renderer = load_policy_and_templates(settings)
    live = build_env(settings, renderer, "live")
    return policy, live, replace(live, mode="shadow")


def _run(classifier, pipeline, raw: bytes, row_index: int, shadow: bool) -> None:
    policy, live, shadow_env = pipeline
    msg = parse(raw)
    verdict = classifier.classify(msg)
    chosen = decide(policy, verdict)
    forced = policy.rows[row_index % len(policy.rows)].plan
    for plan in (chosen, forced) if forced is not chosen else (chosen,):
        d = prepare(raw, msg, verdict, plan, env=shadow_env if shadow else live, now=NOW, arrived=NOW,
                    histories={a.template: ReplyHistory() for a in plan.sends if a.do == "reply"},
                    breaker_alert_due=True, token="0123456789abcdef")
        for out in d.outgoing:
            assert isinstance(out.raw, bytes) and out.recipient
            email.message_from_bytes(out.raw, policy=email.policy.default)  # what we send parses
            COUNT["sent"] += 1
        assert isinstance(d.summary(), dict)
    COUNT["n"] += 1


@settings(max_examples=fuzz_examples(FUZZ_CI // 2, full=50_000), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(raw=messages(), row=st.integers(0, 50), shadow=st.booleans())
def test_any_message_through_the_whole_pipeline(classifier, pipeline, raw, row, shadow):
    _run(classifier, pipeline, raw, row, shadow)


@settings(max_examples=fuzz_examples(FUZZ_CI // 2, full=50_000), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(raw=addressed_messages(), row=st.integers(0, 50), shadow=st.booleans())
def test_addressed_hostile_message_renders_replies_and_forwards(classifier, pipeline, raw, row, shadow):
    _run(classifier, pipeline, raw, row, shadow)


