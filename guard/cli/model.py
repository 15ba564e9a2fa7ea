"""`guard` subcommands of the model part (registered by guard.cli.main): ``train`` and ``evaluate``.

``guard train``     fits the model on the project's own examples
                    (models/corpus/train, always) plus the public corpus
                    (../shared/corpus by default, read in place; without one
                    it stops unless --events-only says to go on without) and
                    writes guard-model.skops + guard-model.json into the models
                    directory (learning.models_dir, default models/ beside the
                    journal), which guard loads before the shipped model. The
                    shipped model is never overwritten.
``guard evaluate``  grouped 5-fold cross-validation of the FULL verdict
                    (rules + a model trained on the other folds), per-category
                    and binary figures, the false-positive rate on genuine
                    mail, a confusion matrix and a precision-recall curve
                    (printed and written as PNG), then the held-out split
                    scored by the model in use, reported separately. The
                    report goes to ./guard-report/ (--out), never into the package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from guard.errors import ModelError
from guard.paths import shipped

#: categories of the own examples (labels.tsv) and the extra one a verdict can have
OWN_CATEGORIES = ("scam", "report", "inquiry", "automated", "other")
VERDICT_CATEGORIES = ("scam", "suspicious", "report", "inquiry", "automated", "other")
#: where `guard evaluate` writes its report (relative to the working directory) unless --out says otherwise
DEFAULT_REPORT_DIR = Path("guard-report")


def add_commands(sub) -> None:
    """Add this part's subcommands to the `guard` parser."""
    t = sub.add_parser("train", help="train the scam model (or --intent-only the intent model) into the models directory")
    _common(t)
    t.add_argument("--out", type=Path, default=None,
                   help="where the artefact and metadata go (default: learning.models_dir, or models/ beside the journal); "
                        "guard loads a verified model from there before the shipped one")
    t.add_argument("--labelled", type=Path, default=None, metavar="DIR",
                   help="the coordinator's labelled corrections (scam/*.eml, genuine/*.eml; default: learning.labelled_dir, "
                        "or labelled/ beside the configured journal)")
    t.add_argument("--metrics", type=Path, default=None,
                   help="metrics.json of a `guard evaluate` run to record in the metadata (default: guard-report/metrics.json if present)")
    t.add_argument("--intent-only", action="store_true",
                   help="train only the intent model (own examples; the shipped scam model supplies its features)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="grouped cross-validation of rules + model, plots, and the holdout split scored by the shipped model")
    _common(e)
    e.add_argument("--out", type=Path, default=None, help=f"report directory (default: ./{DEFAULT_REPORT_DIR}/ in the working directory)")
    e.add_argument("--folds", type=int, default=5)
    e.add_argument("--explain", action="store_true", help="print each message's top contributing model features")
    e.add_argument("--no-holdout", action="store_true", help="skip scoring the holdout split with the shipped model")
    e.add_argument("--dump", type=Path, default=None, metavar="FILE",
                   help="also write every own example's cross-validated result as JSON lines (for tuning bucket edges; "
                        "with --pipeline-only the full pipeline's CV verdicts; never a frozen split's messages)")
    e.add_argument("--split", type=Path, action="append", default=None, metavar="DIR",
                   help="a frozen test split (DIR/labels.tsv; default: tests/heldout/*): the full pipeline's figures on it")
    e.add_argument("--pipeline-only", action="store_true",
                   help="only the full pipeline's figures: grouped CV of the intent stage and the test split(s)")
    e.add_argument("--nested", action="store_true",
                   help="with --pipeline-only: the CV retrains the scam model in every fold too (a full training per "
                        "fold, minutes), so that no learned stage has seen a held-out example")
    e.set_defaults(func=cmd_evaluate)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", type=Path, action="append", default=None, metavar="DIR",
                   help="public corpus directory with labels.tsv (repeatable; default: ../shared/corpus beside the repository, if present)")
    p.add_argument("--own", type=Path, default=None, help="own examples directory (default: models/corpus)")
    p.add_argument("--events-only", action="store_true",
                   help="only the own (events-office) examples, no public corpus (a much weaker scam model than the shipped one)")
    p.add_argument("--max-public", type=int, default=None, help="deterministic subsample of the public corpus (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="processes for parsing and classifying (default 2)")


class _Progress:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _inputs(args) -> tuple[Path, list[Path]]:
    own = args.own or (shipped("models") / "corpus")
    if args.events_only:
        return own, []
    if args.corpus:
        for d in args.corpus:
            if not (d / "labels.tsv").is_file():
                raise ModelError(f"{d}: no labels.tsv (expected the public corpus layout)")
        return own, list(args.corpus)
    from guard.classification.model import default_public_corpus

    d = default_public_corpus(shipped("models").parent)
    if d is None:
        where = (shipped("models").parent / ".." / "shared" / "corpus").resolve()
        raise ModelError(
            f"no public corpus found (none given with --corpus, and no {where}/labels.tsv beside the source checkout): "
            "on the own examples alone the scam model is much "
            "weaker than the shipped one. Give the corpus with --corpus DIR, or say --events-only to train on the "
            "own examples alone (guard train --intent-only needs no public corpus)")
    return own, [d]


def _models_out(args, settings) -> Path:
    """Where training writes: --out, else the models directory; never into the installed package."""
    from guard.paths import inside_package, state_models_dir

    out = args.out or state_models_dir(settings)
    if inside_package(out):
        raise ModelError(f"{out}: inside the installed guard package; the shipped model is never overwritten. "
                         "Give another --out DIR (or set learning.models_dir)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".guard-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ModelError(f"{out}: cannot write the models there ({exc.strerror or exc}); give --out DIR, set "
                         "learning.models_dir, or --config a file whose daemon.journal is writable") from None
    return out


def _settings(args):
    from guard.settings import load_settings

    return load_settings(getattr(args, "config", None))


# -- train --------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    if args.intent_only:
        return cmd_train_intent(args)
    from guard.classification.model import train

    say = _Progress()
    own, public = _inputs(args)
    settings = _settings(args)
    out = _models_out(args, settings)
    say(f"own examples: {own / 'train'}; public corpus: {', '.join(map(str, public)) or 'none (--events-only)'}")
    metrics = _load_metrics(args.metrics or (DEFAULT_REPORT_DIR / "metrics.json"), required=args.metrics is not None)
    model, artefact, meta_path = train(
        own, public, out, extra_labelled=_labelled(args, say, settings), max_public=args.max_public, jobs=args.jobs,
        progress=say, metrics=metrics,
    )
    meta = model.metadata
    stale = metrics and metrics.get("data_hashes", {}).get("own_train") != meta["training"]["data_hashes"]["own_train"]
    if stale:
        say("note: the recorded evaluation metrics were measured on a different set of own examples; re-run `guard evaluate`")
        meta["metrics"]["stale"] = True
        meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"model: {artefact} ({artefact.stat().st_size / 1e6:.2f} MB, sha256 {meta['sha256'][:16]}...)")
    print(f"metadata: {meta_path}")
    print(f"trained on {meta['training']['rows']} rows ({meta['training']['positive_rows']} scam) in {meta['training']['seconds']} s")
    _in_use_note(args, settings, out)
    return 0


def _in_use_note(args, settings, out: Path) -> None:
    from guard.paths import state_models_dir

    if out.resolve() == state_models_dir(settings).resolve():
        print(f"guard loads the models in {out} before the shipped ones (delete them there to go back to the shipped ones)")
    else:
        print(f"not in use: guard loads trained models from {state_models_dir(settings)} (learning.models_dir)")


def _labelled(args, say, settings) -> list[tuple[bytes, str]]:
    """The coordinator's corrections kept by the daemon (guard/learning/corrections.py), as extra labelled examples."""
    from guard.learning.corrections import labelled_dir, labelled_examples

    d = args.labelled
    if d is None:
        d = labelled_dir(settings)
    found = labelled_examples(d)
    say(f"labelled corrections: {len(found)} from {d}")
    return found


def _load_metrics(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise ModelError(f"{path}: metrics file not found")
        return {}
    try:
        full = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable metrics: {exc}") from None
    keep = ("created", "folds", "data_hashes", "cv_own", "cv_public", "buckets", "holdout")
    return {"source": path.name, **{k: full[k] for k in keep if k in full}}  # a name, not a path of this machine


# -- evaluate -----------------------------------------------------------------------------------


@dataclass
class Record:
    key: str
    source: str  # own | public
    label: str  # own category, or spam/ham/phishing
    positive: bool
    fold: int = -1
    p: float = float("nan")
    category: str = ""  # full verdict, rules + fold model
    score: float = 0.0
    rules_category: str = ""  # rules only
    explain: list = field(default_factory=list)


_EVAL: dict = {}


def _classify_one(i: int):
    from guard.mail.message import parse

    e = _EVAL
    s = e["samples"][i]
    f = e["fold_of"][i]
    msg = parse(s.read())
    v = e["classifiers"][f].classify(msg)
    r = e["rules"].classify(msg)
    ex = e["models"][f].explain(msg, e["top"]) if e["explain"] else []
    return i, v.category, v.score, v.model_p, r.category, ex


def _classify_all(samples, fold_of, classifiers, rules_clf, models, explain: bool, jobs: int, say, top: int = 6):
    import multiprocessing as mp

    global _EVAL
    _EVAL = dict(samples=samples, fold_of=fold_of, classifiers=classifiers, rules=rules_clf, models=models, explain=explain, top=top)
    n = len(samples)
    out = [None] * n
    step = max(1, n // 10)
    t0 = time.perf_counter()
    try:
        if jobs > 1 and n > 200 and "fork" in mp.get_all_start_methods():
            with mp.get_context("fork").Pool(jobs) as pool:
                for k, res in enumerate(pool.imap_unordered(_classify_one, range(n), chunksize=32), start=1):
                    out[res[0]] = res
                    if k % step == 0 or k == n:
                        say(f"classified {k}/{n} ({time.perf_counter() - t0:.1f}s)")
        else:
            for k in range(n):
                out[k] = _classify_one(k)
                if (k + 1) % step == 0 or k + 1 == n:
                    say(f"classified {k + 1}/{n} ({time.perf_counter() - t0:.1f}s)")
    finally:
        _EVAL = {}
    return out


def _base_classifier(args):
    """Rules and the scam model in use (trained, else shipped), no intent model: what the intent stage is trained over."""
    from guard.classification.assemble import build_classifier
    from guard.classification.model_loader import load_default_model
    from guard.settings import load_settings

    settings = load_settings(args.config)
    model = load_default_model(settings)
    if model is None:
        raise ModelError("no scam model, trained or shipped: train it first (guard train)")
    return settings, build_classifier(settings, model=model, intent=None)


def cmd_train_intent(args) -> int:
    from guard.classification import intent
    from guard.learning import intent_training as it

    say = _Progress()
    own = args.own or (shipped("models") / "corpus")
    settings, base = _base_classifier(args)
    out = _models_out(args, settings)
    examples = it.read_labels(own, "train")
    say(f"intent model: {len(examples)} own examples from {own / 'train'}")
    rows = it.rows_of(base, examples, progress=say)
    model = it.fit_rows(rows, examples)
    counts = Counter(intent.intent_of_label(e.category, "yes" if e.paid else "no") for e in examples)
    artefact, meta = intent.save(model, out, {"examples": len(examples), "label_counts": dict(sorted(counts.items()))})
    print(f"intent model: {artefact} ({artefact.stat().st_size / 1e6:.2f} MB)")
    print(f"metadata: {meta}")
    _in_use_note(args, settings, out)
    return 0


def _default_splits() -> list[Path]:
    root = shipped("models").parent / "tests" / "heldout"
    return sorted(p for p in root.iterdir() if (p / "labels.tsv").is_file()) if root.is_dir() else []


def _dump_cv(path: Path, own: Path, examples, predictions) -> None:
    """The cross-validated verdict of every own example, one JSON object per line. Only the own
    examples: a frozen test split is measured in aggregate and never listed message by message."""
    with path.open("w", encoding="utf-8") as fh:
        for e, p in zip(examples, predictions, strict=True):
            rel = e.path.relative_to(own) if e.path.is_relative_to(own) else e.path
            fh.write(json.dumps({"path": str(rel), "group": e.group, "lang": e.lang, "category": e.category,
                                 "paid": e.paid, "predicted": p.category, "predicted_paid": p.paid}) + "\n")


def cmd_evaluate_pipeline(args) -> int:
    """The full pipeline's figures: grouped CV of the intent stage on the own examples, then each
    frozen test split classified by the shipped pipeline (rules, scam model, intent model)."""
    from guard.classification.assemble import build_classifier
    from guard.classification.evaluation import Labelled, figures, report
    from guard.learning import intent_training as it
    from guard.mail.message import parse

    say = _Progress()
    own = args.own or (shipped("models") / "corpus")
    settings, base = _base_classifier(args)
    examples = it.read_labels(own, "train")
    if args.nested:
        own, public = _inputs(args)
        say(f"nested grouped {args.folds}-fold CV (scam and intent models retrained per fold) over {len(examples)} own examples")
        cv = it.nested_cross_validate(settings, own, public, examples, folds=args.folds, jobs=args.jobs, progress=say)
        title = f"nested grouped {args.folds}-fold cross-validation, own examples (both models retrained per fold)"
    else:
        say(f"grouped {args.folds}-fold CV of the intent stage over {len(examples)} own examples")
        rows = it.rows_of(base, examples, progress=say)
        cv = it.cross_validate(rows, examples, settings.thresholds, folds=args.folds)
        title = f"grouped {args.folds}-fold cross-validation of the intent stage, own examples (the shipped scam model saw them)"
    results = [(title, "cv", figures(it.truth_of(examples), cv))]
    print(report(results[0][2], results[0][0]))
    if args.dump:
        _dump_cv(args.dump, own, examples, cv)
    full = build_classifier(settings, model=base.model)
    if full.intent is None:
        raise ModelError("no intent model is shipped: train it first (guard train --intent-only)")
    for split in args.split or _default_splits():
        ex = it.read_labels(split, None)
        preds = []
        for e in ex:
            v = full.classify(parse(e.path.read_bytes()))
            preds.append(Labelled(v.category, v.paid))
        results.append((f"frozen test split {split}", split.name, figures(it.truth_of(ex), preds)))
        print()
        print(report(results[-1][2], results[-1][0]))
    out_dir = args.out or DEFAULT_REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pipeline.txt").write_text("\n\n".join(report(f, title) for title, _, f in results) + "\n", encoding="utf-8")
    (out_dir / "pipeline.json").write_text(json.dumps({key: f for _, key, f in results}, indent=2) + "\n", encoding="utf-8")
    written = ["pipeline.txt", "pipeline.json", *_confusion_plots(out_dir, results)]
    say(f"wrote {', '.join(str(out_dir / w) for w in written)}")
    return 0


def _draw_confusion(ax, rows, cols, counts, *, xlabel: str, ylabel: str, title: str) -> None:
    """One confusion matrix: colour by the share of its row, the count written in each cell."""
    import numpy as np

    a = np.array(counts, dtype=float)
    norm = a / np.maximum(a.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, int(a[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)


def _confusion_plots(out_dir: Path, results) -> list[str]:
    """One confusion-matrix PNG per result; none (and a note) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("(plots skipped: matplotlib is not installed; pip install 'guard[plots]')", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from guard.classification.evaluation import TRUTH
    from guard.classification.verdict import CATEGORIES

    names = []
    for title, key, f in results:
        grid = [[f["confusion"][t].get(c, 0) for c in CATEGORIES] for t in TRUTH]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        _draw_confusion(ax, TRUTH, CATEGORIES, grid, xlabel="verdict", ylabel="truth", title=title)
        fig.tight_layout()
        name = f"pipeline_confusion_{key}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def cmd_evaluate(args) -> int:
    if args.pipeline_only:
        return cmd_evaluate_pipeline(args)
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    from guard.classification.assemble import build_classifier, load_rules
    from guard.classification.model import build_training_set, collect_samples, data_hash, fit_model
    from guard.settings import load_settings

    say = _Progress()
    own_dir, public = _inputs(args)
    out_dir = args.out or DEFAULT_REPORT_DIR
    settings = load_settings(args.config)
    ruleset = load_rules(settings)
    samples = collect_samples(own_dir, public, max_public=args.max_public, warn=say)
    if not samples:
        raise ModelError("nothing to evaluate")
    say(f"{len(samples)} messages: {sum(s.source == 'own' for s in samples)} own (train split), {sum(s.source == 'public' for s in samples)} public")
    ts = build_training_set(samples, jobs=args.jobs, progress=say)
    samples = ts.samples
    strata = [f"{s.source}:{s.category}" for s in samples]
    groups = [s.group for s in samples]
    n_groups = len(set(groups))
    folds = min(args.folds, n_groups)
    if folds < 2:
        raise ModelError("cross-validation needs at least two groups of examples")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    fold_of = np.full(len(samples), -1, dtype=np.int64)
    models = []
    p = np.full(len(samples), np.nan)
    by_sample: dict[int, list[int]] = {}
    for r_i, r in enumerate(ts.rows):
        by_sample.setdefault(r[0], []).append(r_i)
    for k, (tr, te) in enumerate(splitter.split(np.zeros(len(samples)), strata, groups)):
        fold_of[te] = k
        rows = [ts.rows[r_i] for i in tr.tolist() for r_i in by_sample[i]]
        t0 = time.perf_counter()
        m = fit_model([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows], check=False)
        p[te] = m.probabilities(m.space.matrix([ts.extracted[i].terms for i in te.tolist()]))
        models.append(m)
        say(f"fold {k + 1}/{folds}: trained on {len(rows)} rows, tested on {len(te)} messages ({time.perf_counter() - t0:.1f}s)")
    classifiers = [build_classifier(settings, model=m, ruleset=ruleset) for m in models]
    rules_clf = build_classifier(settings, model=None, ruleset=ruleset)
    results = _classify_all(samples, fold_of.tolist(), classifiers, rules_clf, models, args.explain, args.jobs, say)
    records = []
    for s, res in zip(samples, results):
        i, cat, score, mp_, rcat, ex = res
        records.append(Record(s.key, s.source, s.category, s.positive, int(fold_of[i]), float(mp_), cat, float(score), rcat, ex))
    # the verdict computes the same probability as the batch above: a cheap consistency check
    drift = max((abs(r.p - p[i]) for i, r in enumerate(records)), default=0.0)
    if drift > 1e-9:
        raise ModelError(f"per-message and batch model probabilities differ by {drift:g}")

    report = Report()
    report.line(f"guard evaluate: {folds}-fold grouped cross-validation (StratifiedGroupKFold; own examples grouped by labels.tsv group,")
    report.line(f"public messages by near-duplicate cluster: {len({s.group for s in samples if s.source == 'public'})} clusters), "
                f"verdict = rules + model trained on the other folds")
    report.line(f"own examples (train split): {Counter(r.label for r in records if r.source == 'own')}")
    if public:
        report.line(f"public corpus: {Counter(r.label for r in records if r.source == 'public')}")
    metrics: dict = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "folds": folds,
        "data_hashes": {"own_train": data_hash([s for s in samples if s.source == "own"])},
    }
    own_recs = [r for r in records if r.source == "own"]
    pub_recs = [r for r in records if r.source == "public"]
    if own_recs:
        metrics["cv_own"] = _section_own(report, own_recs, "CROSS-VALIDATED, own events-office examples")
    if pub_recs:
        metrics["cv_public"] = _section_public(report, pub_recs, "CROSS-VALIDATED, public corpus (spam/phishing = scam, ham = not scam)")
    metrics["buckets"] = _section_buckets(report, records)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(out_dir, own_recs, pub_recs, report)
    if args.explain:
        report.line("")
        report.line("== top model features per message (coefficient x tf-idf; + pushes towards scam) ==")
        for r in records:
            feats = ", ".join(f"{c:+.2f} {name}" for name, c in r.explain)
            report.line(f"{r.key}  [{r.label} -> {r.category}, p={r.p:.3f}]  {feats}")
    if not args.no_holdout:
        metrics["holdout"] = _section_holdout(report, own_dir, settings, ruleset, say)
    if args.dump:
        with args.dump.open("w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps({k: v for k, v in asdict(r).items() if k != "explain"}) + "\n")
    with (out_dir / "predictions.tsv").open("w", encoding="utf-8") as fh:
        fh.write("path\tlabel\tfold\tmodel_p\tverdict\tscam_score\trules_only_verdict\n")
        for r in own_recs + metrics.get("holdout", {}).pop("_records", []):
            fh.write(f"{r.key.split(':', 1)[1]}\t{r.label}\t{r.fold if r.fold >= 0 else 'holdout'}\t{r.p:.4f}\t{r.category}\t{r.score:.1f}\t{r.rules_category}\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n", encoding="utf-8")
    (out_dir / "report.txt").write_text("\n".join(report.lines) + "\n", encoding="utf-8")
    say(f"wrote {out_dir / 'report.txt'}, " + ", ".join(["metrics.json", "predictions.tsv", *plots]))
    return 0


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, flush=True)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1


def per_category(truth: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, dict]:
    out = {}
    for c in labels:
        tp = sum(1 for t, q in zip(truth, pred) if t == c and q == c)
        fp = sum(1 for t, q in zip(truth, pred) if t != c and q == c)
        fn = sum(1 for t, q in zip(truth, pred) if t == c and q != c)
        prec, rec, f1 = _prf(tp, fp, fn)
        out[c] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn, "predicted": tp + fp}
    return out


def binary(positive: Sequence[bool], flagged: Sequence[bool]) -> dict:
    tp = sum(1 for t, f in zip(positive, flagged) if t and f)
    fp = sum(1 for t, f in zip(positive, flagged) if not t and f)
    fn = sum(1 for t, f in zip(positive, flagged) if t and not f)
    neg = sum(1 for t in positive if not t)
    prec, rec, f1 = _prf(tp, fp, fn)
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "positives": tp + fn, "genuine": neg, "fpr_genuine": fp / neg if neg else 0.0}


def confusion(truth: Sequence[str], pred: Sequence[str], rows: Sequence[str], cols: Sequence[str]) -> list[list[int]]:
    c = Counter(zip(truth, pred))
    return [[c[(r, q)] for q in cols] for r in rows]


def _print_confusion(report: Report, title: str, rows, cols, m) -> None:
    w = max(10, *(len(c) + 1 for c in cols))
    report.line(f"  {title} (rows: truth, columns: verdict)")
    report.line("  " + " " * 12 + "".join(f"{c:>{w}}" for c in cols))
    for r, vals in zip(rows, m):
        report.line(f"  {r:<12}" + "".join(f"{v:>{w}}" for v in vals))


def _binary_lines(report: Report, name: str, b: dict) -> None:
    report.line(
        f"  {name:<44} precision {b['precision']:.3f}  recall {b['recall']:.3f} ({b['tp']}/{b['positives']})  F1 {b['f1']:.3f}  "
        f"FPR on genuine {100 * b['fpr_genuine']:.2f}% ({b['fp']}/{b['genuine']})"
    )


def _section_own(report: Report, recs: list[Record], title: str, model_available: bool = True) -> dict:
    from guard.classification.model import OPERATING_THRESHOLD

    report.line("")
    report.line(f"== {title}: {len(recs)} messages ==")
    truth = [r.label for r in recs]
    labels = [c for c in OWN_CATEGORIES if c in truth]
    out: dict = {}
    for name, pred in (("rules + model", [r.category for r in recs]), ("rules only", [r.rules_category for r in recs])):
        if name == "rules + model" and not model_available:
            continue
        pc = per_category(truth, pred, labels)
        out[f"per_category_{'full' if name == 'rules + model' else 'rules_only'}"] = pc
        report.line(f"  per category, {name}:")
        report.line(f"    {'category':<12}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}")
        for c, m in pc.items():
            report.line(f"    {c:<12}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['support']:>9}")
        acc = sum(t == q for t, q in zip(truth, pred)) / len(truth)
        report.line(f"    accuracy {acc:.3f}")
        out[f"accuracy_{'full' if name == 'rules + model' else 'rules_only'}"] = acc
    cols = [c for c in VERDICT_CATEGORIES if c in {r.category for r in recs} | {r.rules_category for r in recs} | set(labels)]
    m = confusion(truth, [r.category for r in recs], labels, cols)
    _print_confusion(report, "confusion matrix, rules + model" if model_available else "confusion matrix", labels, cols, m)
    out["confusion"] = {"rows": labels, "cols": cols, "matrix": m}
    pos = [r.label == "scam" for r in recs]
    report.line("  binary scam vs genuine (genuine = inquiry, other, report, automated):")
    b_model = binary(pos, [r.p >= OPERATING_THRESHOLD for r in recs]) if model_available else None
    b_full = binary(pos, [r.category == "scam" for r in recs])
    b_susp = binary(pos, [r.category in ("scam", "suspicious") for r in recs])
    b_rules = binary(pos, [r.rules_category == "scam" for r in recs])
    if b_model:
        _binary_lines(report, f"model alone, P(scam) >= {OPERATING_THRESHOLD}", b_model)
    _binary_lines(report, "verdict scam (rules + model)", b_full)
    _binary_lines(report, "verdict scam or suspicious (rules + model)", b_susp)
    _binary_lines(report, "verdict scam (rules only)", b_rules)
    out.update(binary_model=b_model, binary_full=b_full, binary_scam_or_suspicious=b_susp, binary_rules_only=b_rules)
    missed = [r for r in recs if r.label == "scam" and r.category != "scam"]
    wrong = [r for r in recs if r.label != "scam" and r.category == "scam"]
    for name, lst in (("scams not called scam", missed), ("genuine mail called scam", wrong)):
        if lst:
            report.line(f"  {name}:")
            for r in lst:
                report.line(f"    {r.key}  -> {r.category} (score {r.score:.1f}, p={r.p:.3f})")
    return out


def _section_public(report: Report, recs: list[Record], title: str) -> dict:
    from guard.classification.model import OPERATING_THRESHOLD

    report.line("")
    report.line(f"== {title}: {len(recs)} messages ==")
    pos = [r.positive for r in recs]
    truth = ["scam" if r.positive else "not scam" for r in recs]
    out: dict = {}
    for name, pred in (("rules + model", [r.category for r in recs]), ("rules only", [r.rules_category for r in recs])):
        pc = per_category(truth, ["scam" if q == "scam" else "not scam" for q in pred], ["scam", "not scam"])
        out[f"per_category_{'full' if name == 'rules + model' else 'rules_only'}"] = pc
        report.line(f"  per category, {name}: " + "; ".join(
            f"{c}: P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f} (n={m['support']})" for c, m in pc.items()))
    cols = [c for c in VERDICT_CATEGORIES if c in {r.category for r in recs}]
    rows = ["spam", "phishing", "ham"]
    m = confusion([r.label for r in recs], [r.category for r in recs], rows, cols)
    _print_confusion(report, "confusion matrix, rules + model", rows, cols, m)
    out["confusion"] = {"rows": rows, "cols": cols, "matrix": m}
    b_model = binary(pos, [r.p >= OPERATING_THRESHOLD for r in recs])
    b_full = binary(pos, [r.category == "scam" for r in recs])
    b_susp = binary(pos, [r.category in ("scam", "suspicious") for r in recs])
    b_rules = binary(pos, [r.rules_category == "scam" for r in recs])
    report.line("  binary (genuine = ham):")
    _binary_lines(report, f"model alone, P(scam) >= {OPERATING_THRESHOLD}", b_model)
    _binary_lines(report, "verdict scam (rules + model)", b_full)
    _binary_lines(report, "verdict scam or suspicious (rules + model)", b_susp)
    _binary_lines(report, "verdict scam (rules only)", b_rules)
    out.update(binary_model=b_model, binary_full=b_full, binary_scam_or_suspicious=b_susp, binary_rules_only=b_rules)
    for sub in sorted({r.key.split("/")[1] for r in recs if "/" in r.key}):
        part = [r for r in recs if r.key.split("/")[1] == sub]
        b = binary([r.positive for r in part], [r.category == "scam" for r in part])
        bm = binary([r.positive for r in part], [r.p >= OPERATING_THRESHOLD for r in part])
        report.line(f"    subset {sub:<14} n={len(part):<6} verdict recall {b['recall']:.3f} FPR {100 * b['fpr_genuine']:.2f}%   "
                    f"model recall {bm['recall']:.3f} FPR {100 * bm['fpr_genuine']:.2f}%")
    return out


def _section_buckets(report: Report, recs: list[Record]) -> list[dict]:
    from guard.classification.model import BUCKETS

    report.line("")
    report.line("== model buckets (cross-validated probabilities; the rules in rules/50_model.toml) ==")
    report.line(f"  {'rule':<20}{'range':>14}{'score':>7}{'own scam':>10}{'own genuine':>13}{'public scam':>13}{'public ham':>12}")
    out = []
    for rule, lo, hi, sc in BUCKETS:
        inb = [r for r in recs if lo <= r.p < hi]
        row = {
            "rule": rule, "min": lo, "max": min(hi, 1.0), "score": sc,
            "own_scam": sum(r.source == "own" and r.label == "scam" for r in inb),
            "own_genuine": sum(r.source == "own" and r.label != "scam" for r in inb),
            "public_scam": sum(r.source == "public" and r.positive for r in inb),
            "public_ham": sum(r.source == "public" and not r.positive for r in inb),
        }
        out.append(row)
        report.line(f"  {rule:<20}{f'[{lo:.2f}, {min(hi, 1.0):.2f})':>14}{sc:>+7.1f}{row['own_scam']:>10}{row['own_genuine']:>13}"
                    f"{row['public_scam']:>13}{row['public_ham']:>12}")
    return out


def _plots(out_dir: Path, own_recs: list[Record], pub_recs: list[Record], report: Report) -> list[str]:
    """Write the confusion matrix and precision-recall plots; the names of the files written."""
    try:
        import matplotlib
    except ImportError:
        report.line("  (plots skipped: matplotlib is not installed; pip install 'guard[plots]')")
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve

    panels = []
    if own_recs:
        labels = [c for c in OWN_CATEGORIES if c in {r.label for r in own_recs}]
        cols = [c for c in VERDICT_CATEGORIES if c in {r.category for r in own_recs} | set(labels)]
        panels.append(("own examples (per category)", labels, cols, confusion([r.label for r in own_recs], [r.category for r in own_recs], labels, cols)))
    if pub_recs:
        rows = ["spam", "phishing", "ham"]
        cols = [c for c in VERDICT_CATEGORIES if c in {r.category for r in pub_recs}]
        panels.append(("public corpus", rows, cols, confusion([r.label for r in pub_recs], [r.category for r in pub_recs], rows, cols)))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (title, rows, cols, m) in zip(axes[0], panels):
        _draw_confusion(ax, rows, cols, m, xlabel="guard verdict (rules + model)", ylabel="label",
                        title=f"Confusion matrix, {title}\n(cross-validated)")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, recs in (("own examples", own_recs), ("public corpus", pub_recs)):
        if not recs or len({r.positive for r in recs}) < 2:
            continue
        y = np.array([r.positive for r in recs], dtype=int)
        s = np.array([r.p for r in recs])
        prec, rec, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        ax.plot(rec, prec, label=f"{name} (AP {ap:.3f}, n={len(recs)})")
        report.line(f"  model average precision, {name}: {ap:.4f}")
    ax.set_xlabel("recall (scam)")
    ax.set_ylabel("precision (scam)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title("Model P(scam), cross-validated precision-recall")
    fig.tight_layout()
    fig.savefig(out_dir / "pr_curve.png", dpi=110)
    plt.close(fig)
    return ["confusion_matrix.png", "pr_curve.png"]


def _section_holdout(report: Report, own_dir: Path, settings, ruleset, say) -> dict:
    from guard.classification.assemble import build_classifier
    from guard.mail.message import parse
    from guard.classification.model import read_own
    from guard.classification.model_loader import find_model

    samples = read_own(own_dir, "holdout", say)
    report.line("")
    if not samples:
        report.line("HOLDOUT: no holdout examples found")
        return {}
    model, artefact = find_model(settings)
    clf = build_classifier(settings, model=model, ruleset=ruleset)
    rules_clf = build_classifier(settings, model=None, ruleset=ruleset)
    recs = []
    for s in samples:
        msg = parse(s.read())
        v = clf.classify(msg)
        r = rules_clf.classify(msg)
        recs.append(Record(s.key, "own", s.category, s.category == "scam", -1, v.model_p if v.model_p is not None else float("nan"),
                           v.category, v.score, r.category))
    created = model.metadata.get("created", "?") if model else None
    title = (f"HOLDOUT split (models/corpus/holdout, never used for training or tuning), scored by the model in use "
             f"{artefact} (created {created})" if model else "HOLDOUT split, rules only (no model)")
    out = _section_own(report, recs, title, model_available=model is not None)
    out["_records"] = recs
    b = out["binary_full"]
    report.line("")
    report.line(
        f"HOLDOUT (model in use, {len(recs)} held-out own examples, separate from the cross-validation above): "
        f"scam recall {b['recall']:.3f} ({b['tp']}/{b['positives']}), precision {b['precision']:.3f}, "
        f"genuine mail called scam {100 * b['fpr_genuine']:.2f}% ({b['fp']}/{b['genuine']}), "
        f"per-category accuracy {out.get('accuracy_full', out.get('accuracy_rules_only', 0)):.3f}"
    )
    return out


__all__ = ["add_commands", "binary", "per_category", "confusion", "Record"]
