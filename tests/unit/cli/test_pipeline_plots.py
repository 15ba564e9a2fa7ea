"""`guard evaluate --pipeline-only` writes a confusion-matrix PNG per result, and says which."""

from __future__ import annotations

import pytest

from guard.classification.evaluation import Labelled, figures
from guard.cli.model import _confusion_plots


def test_one_png_per_result(tmp_path):
    pytest.importorskip("matplotlib")
    f = figures([Labelled("scam", False), Labelled("report", True)], [Labelled("scam", False), Labelled("inquiry", False)])
    names = _confusion_plots(tmp_path, [("cv", "cv", f), ("split A", "batchA", f)])
    assert names == ["pipeline_confusion_cv.png", "pipeline_confusion_batchA.png"]
    for n in names:
        assert (tmp_path / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dump_lists_own_examples_with_their_cv_verdict(tmp_path):
    import json

    from guard.cli.model import _dump_cv
    from guard.learning.intent_training import Example

    own = tmp_path / "corpus"
    examples = [Example(own / "train/scam/001-a.eml", "scam", False, "g1", "en"),
                Example(own / "train/report/002-b.eml", "report", True, "g2", "es")]
    out = tmp_path / "cv.jsonl"
    _dump_cv(out, own, examples, [Labelled("inquiry", False), Labelled("report", True)])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [
        {"path": "train/scam/001-a.eml", "group": "g1", "lang": "en", "category": "scam", "paid": False,
         "predicted": "inquiry", "predicted_paid": False},
        {"path": "train/report/002-b.eml", "group": "g2", "lang": "es", "category": "report", "paid": True,
         "predicted": "report", "predicted_paid": True},
    ]
    with pytest.raises(ValueError):
        _dump_cv(out, own, examples, [Labelled("scam", False)])
