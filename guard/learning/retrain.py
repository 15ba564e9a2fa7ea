"""The optional scheduled retrain (``learning.retrain_hours``, 0 = off, the default).

Every ``retrain_hours`` -- and only when the coordinator labelled something new
since the last run -- a candidate model is trained on the project's own
examples plus the labelled corrections (no public corpus: the daemon's host
need not have it), in a worker thread. The candidate and the running model are
both scored on the same evaluation set: the own held-out split plus the
labelled corrections. The candidate replaces the running model only when
:func:`no_worse` holds (pure, tested): it catches at least as many scams and
flags no more genuine mail. The candidate is written to the models directory (``learning.models_dir``, by default ``<journal dir>/models/``)
and used from then on, also after a restart (guard/classification/model_loader.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from guard.digest import records as dj

log = logging.getLogger("guard.learning.retrain")


@dataclass(frozen=True)
class Scores:
    """Outcomes on the evaluation set at the model's operating threshold."""

    tp: int = 0  # scam flagged
    fn: int = 0  # scam missed
    fp: int = 0  # genuine flagged
    tn: int = 0  # genuine passed

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0


def no_worse(current: Scores, candidate: Scores, tolerance: float = 0.0) -> bool:
    """True when the candidate flags no more genuine mail and misses no more scams than the current
    model (rates, so evaluation sets of other sizes compare; ``tolerance`` absorbs rounding). Pure."""
    if candidate.tp + candidate.fn + candidate.fp + candidate.tn == 0:
        return False  # nothing evaluated: keep what runs
    return candidate.fpr <= current.fpr + tolerance and candidate.recall >= current.recall - tolerance


def score(model, examples: list[tuple[bytes, bool]], threshold: float) -> Scores:
    from guard.mail.message import parse

    tp = fn = fp = tn = 0
    for raw, positive in examples:
        flagged = model is not None and model.scam_probability(parse(raw)) >= threshold
        if positive:
            tp, fn = tp + flagged, fn + (not flagged)
        else:
            fp, tn = fp + flagged, tn + (not flagged)
    return Scores(tp, fn, fp, tn)


class RetrainScheduler:
    def __init__(self, settings, journal, *, executor, clock) -> None:
        self.settings = settings
        self.journal = journal
        self.executor = executor
        self.clock = clock
        self.running = False

    def _due(self) -> bool:
        last = dj.state_get(self.journal, "retrain.last")
        labels = len(dj.labels(self.journal))
        if str(labels) == (dj.state_get(self.journal, "retrain.labels") or "0"):
            return False
        if last is None:
            return True
        return self.clock() - datetime.fromisoformat(last) >= timedelta(hours=self.settings.learning.retrain_hours)

    async def maybe_run(self) -> bool:
        if self.running or not self._due():
            return False
        self.running = True
        try:
            labels = len(dj.labels(self.journal))
            try:
                swapped = await asyncio.to_thread(self._train_and_compare)
            except Exception:  # a failed retrain keeps the running model and waits for the next period
                log.exception("retrain failed; keeping the running model")
                swapped = None
            with self.journal._tx():
                for k, v in (("retrain.last", self.clock().isoformat()), ("retrain.labels", str(labels))):
                    self.journal.db.execute("INSERT OR REPLACE INTO guard_state (key, value) VALUES (?, ?)", (k, v))
            if swapped is not None:
                from guard.learning.corrections import LiveListsClassifier

                cl = self.executor.classifier
                base = cl.base if isinstance(cl, LiveListsClassifier) else cl
                self.executor.classifier = LiveListsClassifier(dataclasses.replace(base, model=swapped), self.journal)
                log.info("retrain: the new model evaluates no worse; it is in use from now on")
            return swapped is not None
        finally:
            self.running = False

    def _train_and_compare(self):
        from guard.learning.corrections import labelled_dir, labelled_examples
        from guard.classification.model import OPERATING_THRESHOLD, load_model, read_own, train
        from guard.paths import shipped, state_models_dir

        own = shipped("models") / "corpus"
        labelled = labelled_examples(labelled_dir(self.settings))
        evalset = [(s.read(), s.positive) for s in read_own(own, "holdout")]
        evalset += [(raw, label == "scam") for raw, label in labelled]
        with tempfile.TemporaryDirectory(prefix="guard-retrain-") as tmp:
            model, artefact, meta_path = train(own, [], Path(tmp), extra_labelled=labelled, jobs=1)
            cl = self.executor.classifier
            current = getattr(getattr(cl, "base", cl), "model", None)
            old, new = score(current, evalset, OPERATING_THRESHOLD), score(model, evalset, OPERATING_THRESHOLD)
            log.info("retrain: current recall %.3f fpr %.3f; candidate recall %.3f fpr %.3f", old.recall, old.fpr,
                     new.recall, new.fpr)
            if current is not None and not no_worse(old, new):
                log.info("retrain: the candidate evaluates worse; keeping the running model")
                return None
            out = state_models_dir(self.settings)
            out.mkdir(parents=True, exist_ok=True)
            for src in (meta_path, artefact):  # the artefact last: the loader looks for it
                shutil.copyfile(src, out / (src.name + ".tmp"))
                os.replace(out / (src.name + ".tmp"), out / src.name)
            return load_model(out / artefact.name)
