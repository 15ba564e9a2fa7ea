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
