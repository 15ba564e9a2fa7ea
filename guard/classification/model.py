"""The trained scam model: artefact format, verified loading, scoring and training.

The model is one scored signal for the rules (``type = "model"`` buckets in
``rules/50_model.toml``), never an action by itself. It is a linear model over
the TF-IDF features of :mod:`guard.classification.features` (L2-regularised logistic
regression) with Platt-calibrated probabilities (scikit-learn's
``CalibratedClassifierCV(method="sigmoid", ensemble=False)``, calibrated on
grouped cross-validation folds).

Artefact
    ``models/guard-model.skops``: a skops file (no pickle) holding only a dict
    of numpy arrays and strings: each block's vocabulary (word and meta terms
    as UTF-8 text, char n-gram codes), idf and the coefficients, the intercept
    and the two calibration parameters. Loading lets through only the types in
    :data:`TRUSTED_TYPES`, with a strict reader of the skops format
    (:func:`read_skops`; ``import skops.io`` would pull in all of scikit-learn
    at every start, about 100 MB and 1.5 s). The fitted scikit-learn objects are not stored:
    skops writes a fitted ``TfidfVectorizer``'s vocabulary as one JSON node per
    term (20 MB, minutes to write, seconds to load), and scoring needs only
    the arrays. Training checks that scoring from the arrays reproduces
    scikit-learn's ``predict_proba`` before it writes anything.

Metadata
    ``models/guard-model.json`` beside it: format, library versions, feature
    version, SHA-256 and size of the artefact, data hashes, label counts,
    bucket edges, metrics, creation time. :func:`load_model` refuses (with
    :class:`~guard.errors.ModelError`) a missing artefact or metadata, a
    checksum mismatch, a different scikit-learn major.minor or feature version,
    and any type outside :data:`TRUSTED_TYPES`.

Training code (scikit-learn, scipy, multiprocessing) is imported lazily, so
scoring needs only numpy.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from guard.classification import features
from guard.disjoint_sets import DisjointSets
from guard.errors import ModelError
from guard.classification.features import CodeBlock, FeatureSpace, StringBlock, Terms
from guard.mail.message import ParsedMessage, parse

ARTEFACT_NAME = "guard-model.skops"
METADATA_NAME = "guard-model.json"
FORMAT = "guard-model/1"

#: the only types a model artefact may contain (checked in the file's schema before loading)
TRUSTED_TYPES = ("builtins.dict", "builtins.list", "builtins.str", "builtins.int", "builtins.float", "numpy.ndarray")

#: Probability buckets the rules in rules/50_model.toml use, (rule id, min, max, score).
#: Edges and scores come from ``guard evaluate``; see models/README.md for why.
BUCKETS = (
    ("MODEL_SCAM_P99", 0.99, 1.0000001, 3.5),
    ("MODEL_SCAM_P90", 0.90, 0.99, 3.0),
    ("MODEL_SCAM_P70", 0.70, 0.90, 1.0),
    ("MODEL_GENUINE_P10", 0.0, 0.10, -1.0),
)
#: the probability at which the model alone is counted as "says scam" in binary metrics
OPERATING_THRESHOLD = 0.90

#: own examples whose category is one of these are the positive class; everything else is negative
POSITIVE_CATEGORIES = frozenset({"scam", "spam", "phishing"})

DEFAULT_WEIGHTS = {"own": 6.0, "extra": 6.0, "public": 1.0}
DEFAULT_CLASSIFIER = "svm"
DEFAULT_C = {"svm": 0.5, "logreg": 4.0}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("scikit-learn", "skops", "numpy", "scipy"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _major_minor(v: str) -> str:
    return ".".join(v.split(".")[:2])


# -- the scorer -----------------------------------------------------------------------------


@dataclass
class GuardModel:
    """A loaded or freshly trained model: ``scam_probability(msg)`` is the calibrated P(scam)."""

    space: FeatureSpace
    coef: np.ndarray  # float64, one per column of ``space``
    intercept: float
    calib_a: float  # P(scam) = 1 / (1 + exp(a * decision + b))  (Platt / sklearn _SigmoidCalibration)
    calib_b: float
    metadata: dict = field(default_factory=dict)

    def decision(self, t: Terms) -> float:
        cols, vals = self.space.row(t)
        return float(vals @ self.coef[cols]) + self.intercept

    def calibrate(self, decision: float | np.ndarray):
        z = self.calib_a * np.asarray(decision, dtype=np.float64) + self.calib_b
        # 1 / (1 + e^z), written to stay finite for large |z|
        out = np.where(z >= 0, np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))), 1.0 / (1.0 + np.exp(-np.abs(z))))
        return float(out) if out.ndim == 0 else out

    def probability_from_terms(self, t: Terms) -> float:
        return self.calibrate(self.decision(t))

    def scam_probability(self, msg: ParsedMessage) -> float:
        return self.probability_from_terms(features.terms(msg))

    def probabilities(self, X) -> np.ndarray:
        """P(scam) for the rows of a feature matrix from ``self.space.matrix``."""
        return self.calibrate(np.asarray(X @ self.coef).ravel() + self.intercept)

    def explain(self, msg: ParsedMessage, top: int = 10) -> list[tuple[str, float]]:
        """The features that pushed the decision most (coefficient x TF-IDF value), largest |contribution| first."""
        docs = features.documents(msg)
        t = features.terms_of(docs)
        cols, vals = self.space.row(t)
        contrib = vals * self.coef[cols]
        names = self.space.explain_terms(t, docs)
        order = np.argsort(-np.abs(contrib), kind="stable")[:top]
        return [(names.get(int(cols[i]), f"#{int(cols[i])}"), float(contrib[i])) for i in order]

    # -- (de)serialisation as plain arrays --------------------------------------------------
    def to_state(self) -> dict:
        state: dict = {"format": FORMAT, "feature_version": str(features.FEATURE_VERSION)}
        for b in self.space.blocks:
            if isinstance(b, StringBlock):
                for term in b.terms:
                    if "\n" in term:
                        raise ModelError(f"term {term!r} of block {b.name} contains a newline")
                state[f"{b.name}.terms"] = np.frombuffer("\n".join(b.terms).encode("utf-8"), dtype=np.uint8).copy()
                state[f"{b.name}.n"] = np.array([len(b.terms)], dtype=np.int64)
            else:
                state[f"{b.name}.codes"] = np.asarray(b.codes, dtype=np.uint64)
            state[f"{b.name}.idf"] = np.asarray(b.idf, dtype=np.float64)
        state["blocks"] = ",".join(b.name for b in self.space.blocks)
        state["coef"] = np.asarray(self.coef, dtype=np.float64)
        state["scalars"] = np.array([self.intercept, self.calib_a, self.calib_b], dtype=np.float64)
        return state

    @classmethod
    def from_state(cls, state: dict, metadata: dict | None = None) -> "GuardModel":
        try:
            if state.get("format") != FORMAT:
                raise ModelError(f"artefact format {state.get('format')!r}, expected {FORMAT!r}")
            if state.get("feature_version") != str(features.FEATURE_VERSION):
                raise ModelError(
                    f"artefact built with feature version {state.get('feature_version')}, this guard has "
                    f"{features.FEATURE_VERSION}: retrain with `guard train`"
                )
            blocks = []
            for name in state["blocks"].split(","):
                idf = np.asarray(state[f"{name}.idf"], dtype=np.float64)
                if f"{name}.codes" in state:
                    codes = np.asarray(state[f"{name}.codes"], dtype=np.uint64)
                    if len(codes) != len(idf) or (len(codes) > 1 and not np.all(codes[1:] > codes[:-1])):
                        raise ModelError(f"block {name}: codes unsorted or not matching idf")
                    blocks.append(CodeBlock(name, codes, idf))
                else:
                    raw = np.asarray(state[f"{name}.terms"], dtype=np.uint8).tobytes().decode("utf-8")
                    n = int(np.asarray(state[f"{name}.n"])[0])
                    terms_ = raw.split("\n") if n else []
                    if len(terms_) != n or len(idf) != n:
                        raise ModelError(f"block {name}: {len(terms_)} terms, {len(idf)} idf values, {n} expected")
                    blocks.append(StringBlock.create(name, terms_, idf))
            space = FeatureSpace(blocks)
            coef = np.asarray(state["coef"], dtype=np.float64)
            if coef.shape != (space.n_columns,):
                raise ModelError(f"{coef.shape[0]} coefficients for {space.n_columns} features")
            intercept, a, b = (float(x) for x in np.asarray(state["scalars"], dtype=np.float64))
        except ModelError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, UnicodeDecodeError, AttributeError) as exc:
            raise ModelError(f"artefact content is not a guard model: {type(exc).__name__}: {exc}") from None
        if not all(math.isfinite(x) for x in (intercept, a, b)) or not np.all(np.isfinite(coef)):
            raise ModelError("artefact holds non-finite parameters")
        return cls(space, coef, intercept, a, b, metadata or {})


# -- saving and verified loading --------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(model: GuardModel, out_dir: Path, metadata: dict) -> tuple[Path, Path]:
    """Write the artefact and its metadata (with the artefact's SHA-256) into ``out_dir``."""
    import skops.io as sio  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    artefact = out_dir / ARTEFACT_NAME
    meta_path = out_dir / METADATA_NAME
    tmp = artefact.with_suffix(".skops.tmp")
    sio.dump(model.to_state(), tmp, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    data = tmp.read_bytes()
    meta = dict(metadata)
    meta.update(
        format=FORMAT,
        artefact=ARTEFACT_NAME,
        sha256=_sha256(data),
        size_bytes=len(data),
        feature_version=features.FEATURE_VERSION,
        versions=versions(),
    )
    meta.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    os.replace(tmp, artefact)
    tmp_meta = meta_path.with_suffix(".json.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp_meta, meta_path)
    model.metadata = meta
    return artefact, meta_path


_SKOPS_PROTOCOLS = (2,)


def read_skops(data: bytes, path: Path | str = "artefact") -> dict:
    """Read a skops file holding only :data:`TRUSTED_TYPES`; anything else raises ModelError.

    A strict reader of the skops format (zip: ``schema.json`` + ``.npy`` files,
    read with ``allow_pickle=False``) that understands only the node kinds a
    guard model uses: a dict with string keys, JSON strings and numbers, and
    numeric numpy arrays. It exists because ``import skops.io`` imports all of
    scikit-learn and scipy (about 100 MB of memory and 1.5 s at every start);
    tests check that ``skops.io.load`` reads the same artefact to the same state.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        schema = json.loads(zf.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a skops file: {exc}") from None
    if not isinstance(schema, dict) or schema.get("protocol") not in _SKOPS_PROTOCOLS:
        raise ModelError(f"{path}: unsupported skops protocol {schema.get('protocol') if isinstance(schema, dict) else None!r}")
    found: set[str] = set()
    _schema_types(schema, found)
    untrusted = sorted(found - set(TRUSTED_TYPES))
    if untrusted:
        raise ModelError(f"{path}: artefact contains types outside the trusted list: {', '.join(untrusted)}")

    try:
        with zf:
            state = _skops_node(schema, zf, path)
    except ModelError:
        raise
    except Exception as exc:  # malformed zip members, npy headers, ...
        raise ModelError(f"{path}: cannot read the artefact: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: artefact does not hold a model state")
    return state


def _skops_node(n, zf: zipfile.ZipFile, path):
    if not isinstance(n, dict):
        raise ModelError(f"{path}: malformed skops schema")
    loader = n.get("__loader__")
    if loader == "DictNode":
        keys = n.get("key_types", {}).get("content", [])
        if any(k.get("__loader__") != "TypeNode" or k.get("__class__") != "str" for k in keys):
            raise ModelError(f"{path}: model state keys must be strings")
        return {str(k): _skops_node(v, zf, path) for k, v in n["content"].items()}
    if loader == "JsonNode":
        value = json.loads(n["content"])
        if not isinstance(value, (str, int, float)):
            raise ModelError(f"{path}: unexpected JSON value in the artefact")
        return value
    if loader == "NdArrayNode" and n.get("type") == "numpy":
        arr = np.load(io.BytesIO(zf.read(n["file"])), allow_pickle=False)
        if arr.dtype.kind not in "biuf":
            raise ModelError(f"{path}: array of dtype {arr.dtype} in the artefact")
        return arr
    raise ModelError(f"{path}: skops node kind {loader!r} is not used by guard models")


def _schema_types(node, found: set[str]) -> None:
    if isinstance(node, dict):
        if "__module__" in node and "__class__" in node:
            found.add(f"{node['__module__']}.{node['__class__']}")
        for v in node.values():
            _schema_types(v, found)
    elif isinstance(node, list):
        for v in node:
            _schema_types(v, found)


def load_model(path: Path | str) -> GuardModel:
    """Load and verify a model artefact (its metadata is ``guard-model.json`` beside it)."""
    path = Path(path)
    meta_path = path.with_name(METADATA_NAME) if path.name == ARTEFACT_NAME else path.with_suffix(".json")
    if not path.is_file():
        raise ModelError(f"{path}: model artefact not found (train one with `guard train`)")
    if not meta_path.is_file():
        raise ModelError(f"{meta_path}: model metadata not found; refusing to load {path.name} unverified")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_path}: unreadable model metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path}: not guard model metadata (format {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    trained = str((meta.get("versions") or {}).get("scikit-learn", "unknown"))
    installed = versions()["scikit-learn"]
    if _major_minor(trained) != _major_minor(installed):
        raise ModelError(
            f"{path}: trained with scikit-learn {trained}, installed {installed}; major.minor must match "
            f"(retrain with `guard train`, or install scikit-learn=={_major_minor(trained)}.*)"
        )
    if meta.get("feature_version") != features.FEATURE_VERSION:
        raise ModelError(
            f"{path}: built with feature version {meta.get('feature_version')}, this guard extracts version "
            f"{features.FEATURE_VERSION}; retrain with `guard train`"
        )
    data = path.read_bytes()
    digest = _sha256(data)
    if digest != meta.get("sha256"):
        raise ModelError(
            f"{path}: SHA-256 {digest[:16]}... does not match the metadata ({str(meta.get('sha256'))[:16]}...); "
            "the artefact was modified or corrupted; refusing to load it"
        )
    state = read_skops(data, path)
    if not isinstance(state, dict):
        raise ModelError(f"{path}: artefact does not hold a model state")
    return GuardModel.from_state(state, meta)


# -- training data ----------------------------------------------------------------------------


@dataclass
class Sample:
    key: str  # where it came from, e.g. own:train/scam/001-x.eml
    source: str  # own | public | extra
    category: str  # own: scam/report/inquiry/automated/other; public: spam/ham/phishing; extra: as given
    group: str  # for grouped cross-validation (own: labels.tsv group; public: near-duplicate cluster)
    path: Path | None = None
    raw: bytes | None = None
    inner: str = "-"  # own reports: scam / genuine (the forwarded message)
    weight: float = 1.0

    @property
    def positive(self) -> bool:
        return self.category in POSITIVE_CATEGORIES

    def read(self) -> bytes:
        return self.raw if self.raw is not None else self.path.read_bytes()


def read_own(corpus_dir: Path, split: str = "train", warn: Callable[[str], None] | None = None) -> list[Sample]:
    """The project's own examples of one split (``train`` or ``holdout``) from labels.tsv."""
    labels = corpus_dir / "labels.tsv"
    if not labels.is_file():
        if warn:
            warn(f"{labels}: not found; no own examples")
        return []
    out = []
    missing = 0
    lines = labels.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines[1:], start=2):
        cols = line.rstrip("\n").split("\t")
        if not line.strip() or len(cols) < 6:
            continue
        rel, category, inner, _paid, _lang, group = cols[:6]
        if not rel.startswith(split + "/"):
            continue
        p = corpus_dir / rel
        if not p.is_file():
            missing += 1
            continue
        out.append(Sample(f"own:{rel}", "own", category.strip(), f"own:{group.strip() or rel}", path=p, inner=inner.strip()))
    if missing and warn:
        warn(f"{labels}: {missing} listed {split} files not found (skipped)")
    return out


def read_public(corpus_dir: Path, max_messages: int | None = None) -> list[Sample]:
    """The public corpus (labels.tsv: path, label, subset); a deterministic subsample when ``max_messages`` is set.

    The subsample keeps each (subset, label) in proportion, choosing by the SHA-1 of the path.
    """
    labels = corpus_dir / "labels.tsv"
    if not labels.is_file():
        raise ModelError(f"{corpus_dir}: no labels.tsv (expected the public corpus layout, see its README)")
    rows = []
    for line in labels.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) >= 2 and cols[1] in ("ham", "spam", "phishing"):
            rows.append((cols[0], cols[1], cols[2] if len(cols) > 2 else ""))
    if max_messages is not None and len(rows) > max_messages:
        strata: dict[tuple[str, str], list] = {}
        for r in rows:
            strata.setdefault((r[2], r[1]), []).append(r)
        frac = max_messages / len(rows)
        rows = []
        for key in sorted(strata):
            ordered = sorted(strata[key], key=lambda r: hashlib.sha1(r[0].encode()).hexdigest())
            rows.extend(ordered[: max(1, round(len(ordered) * frac))])
    return [Sample(f"public:{corpus_dir.name}/{rel}", "public", label, "", path=corpus_dir / rel) for rel, label, _ in rows]


def extra_samples(extra_labelled: Sequence[tuple[bytes, str]]) -> list[Sample]:
    """Coordinator-labelled mail as (raw bytes, label); label is a category name or spam/ham/phishing."""
    return [Sample(f"extra:{i}", "extra", label, f"extra:{i}", raw=raw) for i, (raw, label) in enumerate(extra_labelled)]


def data_hash(samples: Iterable[Sample]) -> str:
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.key):
        h.update(f"{s.key}\t{s.category}\t{s.inner}\t{s.group}\n".encode())
        h.update(hashlib.sha256(s.read()).digest())
    return h.hexdigest()


# -- feature extraction in parallel -----------------------------------------------------------

_MINHASH_K = 32
_MINHASH_BANDS = 8
_MINHASH_SEEDS = np.arange(1, _MINHASH_K + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def _signature(docs: features.Documents) -> np.ndarray:
    """MinHash of the word 4-shingles of a message's normalised text (near-duplicate detection)."""
    words = features._WORD.findall(docs.text)
    if len(words) < 8:
        return np.full(_MINHASH_K, features.char_code("\x00".join(words) or docs.subject), dtype=np.uint64)
    w = np.fromiter((zlib.crc32(x.encode("utf-8", "surrogatepass")) for x in words), dtype=np.uint64, count=len(words))
    p = np.uint64(0x100000001B3)
    h = w[:-3] * p
    for k in (1, 2, 3):
        h = (h + w[k : len(w) - 3 + k]) * p
    shingles = np.unique(features._mix(h))
    return features._mix(shingles[None, :] ^ _MINHASH_SEEDS[:, None]).min(axis=1)


@dataclass
class Extracted:
    terms: Terms | None
    inner_terms: Terms | None = None  # a report's forwarded message
    signature: np.ndarray | None = None
    error: str | None = None


_WORK: list[Sample] = []


def _extract_one(i: int) -> tuple[int, Extracted]:
    s = _WORK[i]
    try:
        msg = parse(s.read())
    except OSError as exc:
        return i, Extracted(None, error=str(exc))
    docs = features.documents(msg)
    t = features.terms_of(docs)
    inner = None
    if s.source == "own" and s.inner in ("scam", "genuine") and msg.forwarded:
        inner = features.terms(msg.forwarded[0])
    sig = _signature(docs) if s.source == "public" else None
    return i, Extracted(t, inner, sig)


def extract_all(samples: Sequence[Sample], jobs: int = 2, progress: Callable[[str], None] | None = None) -> list[Extracted]:
    """Parse every sample and compute its terms, in ``jobs`` processes (fork)."""
    import multiprocessing as mp  # noqa: PLC0415

    global _WORK
    _WORK = list(samples)
    out: list[Extracted | None] = [None] * len(samples)
    n = len(samples)
    step = max(1, n // 10)
    t0 = time.perf_counter()
    try:
        if jobs > 1 and n > 200 and "fork" in mp.get_all_start_methods():
            with mp.get_context("fork").Pool(jobs) as pool:
                for k, (i, ex) in enumerate(pool.imap_unordered(_extract_one, range(n), chunksize=64), start=1):
                    out[i] = ex
                    if progress and (k % step == 0 or k == n):
                        progress(f"parsed {k}/{n} messages ({time.perf_counter() - t0:.1f}s)")
        else:
            for k in range(n):
                out[k] = _extract_one(k)[1]
                if progress and ((k + 1) % step == 0 or k + 1 == n):
                    progress(f"parsed {k + 1}/{n} messages ({time.perf_counter() - t0:.1f}s)")
    finally:
        _WORK = []
    return out  # type: ignore[return-value]


def near_duplicate_groups(signatures: Sequence[np.ndarray], prefix: str = "dup") -> list[str]:
    """Cluster messages whose MinHash signatures share a band (LSH, 8 bands of 4): near-duplicates share a group."""
    n = len(signatures)
    sets = DisjointSets(n)

    rows = _MINHASH_K // _MINHASH_BANDS
    for band in range(_MINHASH_BANDS):
        seen: dict[bytes, int] = {}
        for i, sig in enumerate(signatures):
            key = sig[band * rows : (band + 1) * rows].tobytes()
            j = seen.setdefault(key, i)
            if j != i:
                sets.union(i, j)
    return [f"{prefix}:{sets.find(i)}" for i in range(n)]


# -- fitting ----------------------------------------------------------------------------------


def make_estimator(classifier: str, C: float):
    """The linear model behind the calibration: ``svm`` (LinearSVC, hinge-squared loss) or ``logreg``."""
    if classifier == "svm":
        from sklearn.svm import LinearSVC  # noqa: PLC0415

        return LinearSVC(C=C, max_iter=5000, random_state=0)
    if classifier == "logreg":
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        return LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=0)
    raise ValueError(f"unknown classifier {classifier!r}")


def _fit(X, y: np.ndarray, w: np.ndarray, groups: Sequence[str], classifier: str, C: float, calib_folds: int = 3):
    from sklearn.calibration import CalibratedClassifierCV  # noqa: PLC0415
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    splits = list(StratifiedGroupKFold(n_splits=calib_folds, shuffle=True, random_state=0).split(X, y, groups))
    cal = CalibratedClassifierCV(make_estimator(classifier, C), method="sigmoid", cv=splits, ensemble=False)
    cal.fit(X, y, sample_weight=w)
    return cal


def fit_model(
    all_terms: Sequence[Terms],
    y: Sequence[int],
    weights: Sequence[float],
    groups: Sequence[str],
    *,
    classifier: str | None = None,
    C: float | None = None,
    progress: Callable[[str], None] | None = None,
    check: bool = True,
) -> GuardModel:
    """Fit vocabularies, the linear model and its calibration; return the array-backed model.

    With ``check`` the array-backed model must reproduce scikit-learn's
    ``predict_proba`` (to 1e-9) on the training rows, or training fails.
    """
    say = progress or (lambda m: None)
    t0 = time.perf_counter()
    space = FeatureSpace.fit(all_terms)
    say(f"vocabulary: {', '.join(f'{b.name} {len(b)}' for b in space.blocks)} ({time.perf_counter() - t0:.1f}s)")
    X = space.matrix(all_terms)
    say(f"feature matrix {X.shape[0]} x {X.shape[1]}, {X.nnz} non-zeros ({time.perf_counter() - t0:.1f}s)")
    y_a = np.asarray(y, dtype=np.int64)
    w_a = np.asarray(weights, dtype=np.float64)
    classifier = classifier or DEFAULT_CLASSIFIER
    C = DEFAULT_C[classifier] if C is None else C
    cal = _fit(X, y_a, w_a, groups, classifier, C)
    say(f"fitted {classifier} (C={C}) + sigmoid calibration ({time.perf_counter() - t0:.1f}s)")
    cc = cal.calibrated_classifiers_[0]
    lr = cc.estimator
    calib = cc.calibrators[0]
    model = GuardModel(space, lr.coef_.ravel().astype(np.float64), float(lr.intercept_[0]), float(calib.a_), float(calib.b_))
    if check:
        n = min(X.shape[0], 500)
        ref = cal.predict_proba(X[:n])[:, 1]
        ours = np.array([model.probability_from_terms(t) for t in all_terms[:n]])
        diff = float(np.max(np.abs(ref - ours))) if n else 0.0
        if diff > 1e-9:
            raise ModelError(f"scoring from the arrays differs from scikit-learn's predict_proba by {diff:g}: not saving")
    return model


@dataclass
class TrainingSet:
    samples: list[Sample]  # outer messages (what evaluation scores)
    extracted: list[Extracted]
    rows: list[tuple[int, Terms, int, float, str]]  # (sample index, terms, y, weight, group), augmentations included
    errors: list[str]

    def label_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for s in self.samples:
            out.setdefault(s.source, {})
            out[s.source][s.category] = out[s.source].get(s.category, 0) + 1
        return out


def build_training_set(
    samples: list[Sample],
    *,
    weights: dict[str, float] | None = None,
    jobs: int = 2,
    progress: Callable[[str], None] | None = None,
) -> TrainingSet:
    """Parse, extract features, group near-duplicates and add reports' forwarded messages as extra rows."""
    wts = {**DEFAULT_WEIGHTS, **(weights or {})}
    extracted = extract_all(samples, jobs=jobs, progress=progress)
    errors = [f"{s.key}: {e.error}" for s, e in zip(samples, extracted) if e.terms is None]
    keep = [i for i, e in enumerate(extracted) if e.terms is not None]
    samples = [samples[i] for i in keep]
    extracted = [extracted[i] for i in keep]
    pub = [i for i, s in enumerate(samples) if s.source == "public"]
    if pub:
        groups = near_duplicate_groups([extracted[i].signature for i in pub], prefix="public")
        for i, g in zip(pub, groups):
            samples[i].group = g
    rows = []
    for i, (s, e) in enumerate(zip(samples, extracted)):
        s.weight = wts.get(s.source, 1.0)
        rows.append((i, e.terms, int(s.positive), s.weight, s.group))
        if e.inner_terms is not None:
            # a report's forwarded message teaches the model what the reporter received
            rows.append((i, e.inner_terms, int(s.inner == "scam"), s.weight, s.group))
    return TrainingSet(samples, extracted, rows, errors)


def default_public_corpus(repo: Path) -> Path | None:
    cand = (repo / ".." / "shared" / "corpus").resolve()
    return cand if (cand / "labels.tsv").is_file() else None


def collect_samples(
    own_dir: Path,
    public_dirs: Sequence[Path],
    *,
    extra_labelled: Sequence[tuple[bytes, str]] = (),
    max_public: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Sample]:
    samples = read_own(own_dir, "train", warn)
    per_dir = None if max_public is None else max(1, max_public // max(1, len(public_dirs)))
    for d in public_dirs:
        samples.extend(read_public(d, per_dir))
    samples.extend(extra_samples(extra_labelled))
    return samples


def train(
    own_dir: Path,
    public_dirs: Sequence[Path],
    out_dir: Path,
    *,
    extra_labelled: Sequence[tuple[bytes, str]] = (),
    max_public: int | None = None,
    classifier: str | None = None,
    C: float | None = None,
    weights: dict[str, float] | None = None,
    jobs: int = 2,
    progress: Callable[[str], None] | None = None,
    metrics: dict | None = None,
) -> tuple[GuardModel, Path, Path]:
    """Train on the own train split (always), the public corpus dirs and ``extra_labelled``; write artefact + metadata."""
    say = progress or (lambda m: None)
    t0 = time.perf_counter()
    samples = collect_samples(own_dir, public_dirs, extra_labelled=extra_labelled, max_public=max_public, warn=say)
    if not samples:
        raise ModelError("no training examples found")
    say(f"{len(samples)} messages: {sum(s.source == 'own' for s in samples)} own, {sum(s.source == 'public' for s in samples)} public, {sum(s.source == 'extra' for s in samples)} extra")
    ts = build_training_set(samples, weights=weights, jobs=jobs, progress=say)
    for e in ts.errors:
        say(f"skipped {e}")
    ys = [r[2] for r in ts.rows]
    if len(set(ys)) < 2:
        raise ModelError("training needs both scam and non-scam examples")
    classifier = classifier or DEFAULT_CLASSIFIER
    C = DEFAULT_C[classifier] if C is None else C
    model = fit_model([r[1] for r in ts.rows], ys, [r[3] for r in ts.rows], [r[4] for r in ts.rows], classifier=classifier, C=C, progress=say)
    seconds = time.perf_counter() - t0
    own = [s for s in ts.samples if s.source == "own"]
    pub = [s for s in ts.samples if s.source == "public"]
    ext = [s for s in ts.samples if s.source == "extra"]
    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "classifier": repr(make_estimator(classifier, C)),
            "calibration": "CalibratedClassifierCV(method=sigmoid, ensemble=False, 3 grouped folds)",
            "positive_class": sorted(POSITIVE_CATEGORIES),
            "features": {b.name: len(b) for b in model.space.blocks},
            "text_chars": features.TEXT_CHARS,
            "char_chars": features.CHAR_CHARS,
            "char_ngrams": list(features.CHAR_NGRAMS),
        },
        "training": {
            "seconds": round(seconds, 1),
            "rows": len(ts.rows),
            "positive_rows": int(sum(ys)),
            "weights": {**DEFAULT_WEIGHTS, **(weights or {})},
            "label_counts": ts.label_counts(),
            "public_dirs": [Path(d).name for d in public_dirs],  # names only: no path of the training machine
            "public_subsample": max_public,
            "data_hashes": {"own_train": data_hash(own), "public": data_hash(pub) if pub else None, "extra": data_hash(ext) if ext else None},
            "skipped": ts.errors,
        },
        "thresholds": {
            "operating_probability": OPERATING_THRESHOLD,
            "buckets": [{"rule": r, "min": lo, "max": min(hi, 1.0), "score": sc} for r, lo, hi, sc in BUCKETS],
        },
        "metrics": metrics or {},
    }
    artefact, meta_path = save_model(model, out_dir, meta)
    say(f"wrote {artefact} ({artefact.stat().st_size / 1e6:.1f} MB) and {meta_path.name} in {time.perf_counter() - t0:.1f}s")
    return model, artefact, meta_path


__all__ = [
    "ARTEFACT_NAME", "METADATA_NAME", "BUCKETS", "GuardModel", "ModelError", "Sample", "TRUSTED_TYPES",
    "build_training_set", "collect_samples", "fit_model", "load_model", "read_own", "read_public", "save_model", "train",
]
