"""Training and cross-validating the intent model on the project's own labelled examples.

The rows come from the pipeline itself: each example is parsed and classified by the rules and the
scam model (without an intent model), so the intent model learns over exactly the facts it will
see at run time. Cross-validation is grouped by scenario family (labels.tsv ``group``), so
variants of one scenario never sit on both sides of a fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from guard.classification import intent as intent_model
from guard.classification.classify import Classifier
from guard.classification.decision import Evidence, decide
from guard.classification.evaluation import Labelled
from guard.errors import ModelError
from guard.mail.message import parse


@dataclass(frozen=True)
class Example:
    path: Path
    category: str
    paid: bool
    group: str
    lang: str = "und"


def read_labels(root: Path, split: str | None = "train") -> list[Example]:
    """labels.tsv of an own corpus or a test split: path, category, inner, paid, lang, group[, ...]."""
    labels = root / "labels.tsv"
    if not labels.is_file():
        raise ModelError(f"{labels}: not found (a split or corpus directory holds labels.tsv)")
    out = []
    for n, line in enumerate(labels.read_text(encoding="utf-8").splitlines()):
        cols = line.split("\t")
        if n == 0 and cols[0] == "path" or len(cols) < 6 or not line.strip():
            continue
        rel, category, _inner, paid, lang, group = (c.strip() for c in cols[:6])
        if split is not None and not rel.startswith(split + "/"):
            continue
        path = root / rel
        if path.is_file():
            out.append(Example(path, category, paid == "yes", group or rel, lang))
    return out


@dataclass
class Row:
    text: str
    dense: np.ndarray
    scores: dict
    embedded: bool
    quoted: bool
    inner_category: str | None


def row_of(base: Classifier, raw: bytes) -> Row:
    """What the intent stage sees of one message, from a classifier without an intent model."""
    msg = parse(raw)
    v = base.classify(msg)
    return Row(intent_model.author_text(msg), intent_model.dense_features(msg, v.scores, v.model_p, v.inner),
               v.scores, bool(msg.forwarded) and msg.forward_style != "quoted", msg.forward_style == "quoted",
               v.inner.category if v.inner else None)


def rows_of(base: Classifier, examples: Sequence[Example], progress: Callable[[str], None] | None = None) -> list[Row]:
    rows = []
    for i, ex in enumerate(examples):
        rows.append(row_of(base, ex.path.read_bytes()))
        if progress and (i + 1) % 500 == 0:
            progress(f"{i + 1}/{len(examples)} examples read")
    return rows


def fit_rows(rows: Sequence[Row], examples: Sequence[Example]) -> intent_model.IntentModel:
    labels = [intent_model.intent_of_label(e.category, "yes" if e.paid else "no") for e in examples]
    return intent_model.fit([r.text for r in rows], np.vstack([r.dense for r in rows]), labels)


def decide_rows(model: intent_model.IntentModel, rows: Sequence[Row], thresholds) -> list[Labelled]:
    X = intent_model.design_matrix([r.text for r in rows], np.vstack([r.dense for r in rows]))
    P = model.probabilities_of_rows(X)
    out = []
    for r, p in zip(rows, P):
        e = Evidence(r.scores, r.embedded, r.quoted, r.inner_category, dict(zip(intent_model.INTENTS, map(float, p))))
        category, paid, _ = decide(e, thresholds)
        out.append(Labelled(category, paid))
    return out


def cross_validate(rows: Sequence[Row], examples: Sequence[Example], thresholds, folds: int = 5) -> list[Labelled]:
    """Each example's verdict from an intent model that never saw its scenario group."""
    from sklearn.model_selection import GroupKFold  # noqa: PLC0415

    groups = [e.group for e in examples]
    predicted: list[Labelled | None] = [None] * len(rows)
    for train_idx, test_idx in GroupKFold(n_splits=folds).split(np.zeros(len(rows)), groups=groups):
        model = fit_rows([rows[i] for i in train_idx], [examples[i] for i in train_idx])
        for i, lab in zip(test_idx, decide_rows(model, [rows[i] for i in test_idx], thresholds)):
            predicted[i] = lab
    return predicted  # type: ignore[return-value]


def nested_cross_validate(settings, own_dir: Path, public_dirs: Sequence[Path], examples: Sequence[Example],
                          folds: int = 5, jobs: int = 2,
                          progress: Callable[[str], None] | None = None) -> list[Labelled]:
    """Each example's verdict from a pipeline none of whose learned stages saw its scenario group.

    :func:`cross_validate` holds out only the intent model: the scam model whose scores it reads was
    trained on every own example, so a held-out scam's own text is already known to it and the
    figure is optimistic. Here each fold trains the scam model afresh (the public corpus and the own
    examples outside the fold, the same rows as ``guard train``), computes the intent stage's rows
    with that model, trains the intent model on the fold's training rows and decides the rest. It
    costs a full training per fold (minutes), so it is asked for (``guard evaluate --pipeline-only
    --nested``), never run by default."""
    from sklearn.model_selection import GroupKFold  # noqa: PLC0415

    from guard.classification import model as scam_model  # noqa: PLC0415
    from guard.classification.assemble import build_classifier  # noqa: PLC0415

    say = progress or (lambda m: None)
    samples = scam_model.collect_samples(own_dir, public_dirs, warn=say)
    ts = scam_model.build_training_set(samples, jobs=jobs, progress=say)
    index = {e.path.resolve(): i for i, e in enumerate(examples)}
    #: per training row, the example it belongs to (None: a public or extra row, in every fold)
    row_example = [index.get(ts.samples[r[0]].path.resolve()) if ts.samples[r[0]].source == "own" else None
                   for r in ts.rows]
    groups = [e.group for e in examples]
    predicted: list[Labelled | None] = [None] * len(examples)
    for k, (train_idx, test_idx) in enumerate(GroupKFold(n_splits=folds).split(np.zeros(len(examples)), groups=groups)):
        held = set(int(i) for i in test_idx)
        keep = [r for r, ex in zip(ts.rows, row_example) if ex is None or ex not in held]
        model = scam_model.fit_model([r[1] for r in keep], [r[2] for r in keep], [r[3] for r in keep],
                                     [r[4] for r in keep], check=False)
        say(f"fold {k + 1}/{folds}: scam model on {len(keep)} rows ({len(held)} own examples held out)")
        base = build_classifier(settings, model=model, intent=None)
        rows = rows_of(base, examples)
        intent = fit_rows([rows[i] for i in train_idx], [examples[i] for i in train_idx])
        for i, lab in zip(test_idx, decide_rows(intent, [rows[i] for i in test_idx], settings.thresholds)):
            predicted[i] = lab
    return predicted  # type: ignore[return-value]


def truth_of(examples: Sequence[Example]) -> list[Labelled]:
    return [Labelled(e.category, e.paid) for e in examples]
