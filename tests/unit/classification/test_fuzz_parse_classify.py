"""Property test: generated malformed and hostile messages never make parse + classify raise.

The strategies live in tests/strategies.py; tests/unit/respond/test_fuzz_pipeline.py runs the same messages
through the whole decision pipeline (decide and render too).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from strategies import fuzz_examples, messages

from guard.mail.message import parse


@settings(max_examples=fuzz_examples(6_000, full=6_000), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=messages())
def test_parse_and_classify_never_raise(classifier, raw):
    msg = parse(raw)
    verdict = classifier.classify(msg)
    assert verdict.category in ("scam", "suspicious", "report", "inquiry", "automated", "other")
    assert isinstance(verdict.to_dict(), dict)
