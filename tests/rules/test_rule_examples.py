"""Every shipped rule's examples: each ``match`` example hits the rule, each ``no_match`` does not."""

from __future__ import annotations

import pytest

from guard.classification.assemble import load_rules, rule_context
from guard.classification.classify import evaluate
from guard.classification.matchers import MessageView
from guard.mail.message import parse
from guard.settings import load_settings

_SETTINGS = load_settings()
_RULESET = load_rules(_SETTINGS)
_CTX = rule_context(_SETTINGS, _RULESET)

CASES = [
    pytest.param(rule.id, text, expected, id=f"{rule.id}-{'match' if expected else 'no_match'}-{i}")
    for rule in _RULESET.rules
    for expected, examples in ((True, rule.spec.examples.match), (False, rule.spec.examples.no_match))
    for i, text in enumerate(examples)
]


def _hits(text: str, inner_category: str | None = None, model_p: float | None = None) -> set[str]:
    msg = parse(text.encode("utf-8"))
    return {r.id for r in evaluate(_RULESET, MessageView(msg, inner_category, model_p), _CTX)}


@pytest.mark.parametrize("rule_id,text,expected", CASES)
def test_rule_example(rule_id, text, expected):
    hits = _hits(text, inner_category=_inner_category(text), model_p=_model_p(text))
    assert (rule_id in hits) is expected, f"{rule_id} {'should' if expected else 'should not'} match:\n{text}"


def _pseudo_header(text: str, name: str) -> str | None:
    for line in text.splitlines():
        if line.lower().startswith(name + ":"):
            return line.split(":", 1)[1].strip()
        if not line.strip():
            break
    return None


def _inner_category(text: str) -> str | None:
    # examples of rules about forwarded mail state the inner verdict in a pseudo header
    return _pseudo_header(text, "x-example-inner")


def _model_p(text: str) -> float | None:
    # examples of model bucket rules state the model's scam probability in a pseudo header;
    # without it no model is loaded, as in `guard classify --no-model`
    value = _pseudo_header(text, "x-example-model-p")
    return float(value) if value is not None else None


def test_every_rule_has_examples_both_ways():
    for rule in _RULESET.rules:
        assert rule.spec.examples.match and rule.spec.examples.no_match, rule.id


def test_every_scoring_rule_is_described_and_tagged():
    for rule in _RULESET.rules:
        if not rule.spec.internal:
            assert rule.spec.tags, f"{rule.id} has no tags"
            assert rule.spec.description[0].isupper(), rule.id
