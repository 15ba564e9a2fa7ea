"""The pipeline's figures: each rate counts what it says, and the report names missed goals."""

from __future__ import annotations

from guard.classification.evaluation import Labelled, figures, report


def test_figures_and_missed_goals():
    truth = [Labelled("scam", False), Labelled("scam", False), Labelled("report", True), Labelled("report", False),
             Labelled("inquiry", False), Labelled("automated", False), Labelled("other", False)]
    pred = [Labelled("scam", False), Labelled("suspicious", False), Labelled("report", True), Labelled("inquiry", False),
            Labelled("inquiry", False), Labelled("automated", False), Labelled("scam", False)]
    f = figures(truth, pred)
    assert f["scam_quarantined"] == (0.5, 1, 2)
    assert f["scam_or_suspicious"] == (1.0, 2, 2)
    assert f["genuine_quarantined"] == (0.2, 1, 5)
    assert f["report_recognised"] == (0.5, 1, 2)
    assert f["paid_flagged"] == (1.0, 1, 1)
    assert f["inquiry_routed"] == (1.0, 1, 1)
    assert f["confusion"]["other"]["scam"] == 1
    text = report(f, "t")
    assert "scams given the scam verdict" in text and "MISSED by 47.0 points" in text
