"""Finding the models guard uses: the scam model (``guard-model.skops``) and the intent model
(``guard-intent.npz``).

For each, the one `guard train` (or the scheduled retrain) wrote into the models directory
(``learning.models_dir``, by default ``models/`` beside the journal) when it verifies (format,
SHA-256, library and feature versions), else the shipped one, else None (rules only). A trained
artefact that fails verification is logged and passed over; the shipped one is never replaced.

Start-up time: an artefact is verified and unpacked (decompressed, its arrays checked) the first
time by its own loader (:func:`guard.classification.model.load_model`, :func:`guard.classification.intent.load`);
what that gave is then kept uncompressed in guard's cache (``guard/cache.py``) under a name made
of the SHA-256 of the artefact and of its metadata (both read and hashed at every load), guard's
classification code (its files' sizes and times), the installed numpy and scikit-learn, so a
later start reads plain arrays (the intent model's coefficients memory-mapped: only the rows a
message uses become resident). Anything unexpected in the cache means the artefact's own loader again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from guard.classification.classify import ScamModel
from guard.errors import ModelError
from guard.paths import shipped, state_models_dir
from guard.settings import GuardSettings

log = logging.getLogger("guard.classification.model_loader")

SCAM_ARTEFACT = "guard-model.skops"  # guard.classification.model.ARTEFACT_NAME (not imported: scikit-learn)


def _load_first(settings: GuardSettings, name: str, load):
    """(model, path) of the first candidate that verifies: the models directory, then the shipped one."""
    trained = state_models_dir(settings) / name
    if trained.is_file():
        try:
            return load(trained), trained
        except ModelError as exc:
            log.warning("%s: not used, falling back to the shipped model: %s", trained, exc)
    artefact = shipped("models") / name
    if not artefact.is_file():
        return None, None
    return load(artefact), artefact


def find_model(settings: GuardSettings) -> tuple[ScamModel | None, Path | None]:
    """The scam model in use and where it came from (None, None: no model, rules only)."""
    return _load_first(settings, SCAM_ARTEFACT, load_scam_model)


def load_scam_model(path: Path):
    """:func:`guard.classification.model.load_model`, through the cache (module docstring)."""
    from guard.classification import model as m  # noqa: PLC0415 - numpy only when a model exists

    meta_path = path.with_name(m.METADATA_NAME) if path.name == m.ARTEFACT_NAME else path.with_suffix(".json")
    key = _cache_key(path, meta_path, "scam", _installed("sklearn"))
    if key is not None:
        state = _read_cached(key[0], mmap=False)
        if state is not None:
            try:
                return m.GuardModel.from_state(state, json.loads(key[1]))  # the model's own constructor
            except (m.ModelError, ValueError):
                pass
    model = m.load_model(path)  # verifies; raises ModelError as it always did
    if key is not None:
        _write_cached(key[0], model.to_state())
    return model


def load_intent_model(path: Path):
    """:func:`guard.classification.intent.load`, through the cache (module docstring): the loaded
    model's attributes as they were, its arrays memory-mapped."""
    from guard.classification import intent  # noqa: PLC0415

    key = _cache_key(path, path.with_name(intent.METADATA_NAME), "intent")
    if key is not None:
        state = _read_cached(key[0], mmap=True)
        if state is not None:
            model = object.__new__(intent.IntentModel)
            model.__dict__.update(state)
            return model
    model = intent.load(path)  # verifies; raises ModelError as it always did
    if key is not None:
        _write_cached(key[0], dict(vars(model)))
    return model


#: bump when the cached layout changes
_CACHE_VERSION = 1


def _installed(module: str) -> str:
    """An installed package's code file with its size and time (a reinstall changes it)."""
    import importlib.util  # noqa: PLC0415

    from guard.cache import code_key  # noqa: PLC0415

    try:
        origin = importlib.util.find_spec(module).origin  # type: ignore[union-attr]
    except (ImportError, ValueError, AttributeError):
        origin = None
    return code_key(origin) if origin else "absent"


def _code_fingerprint() -> str:
    """guard's classification code (its files' names, sizes and times): what decides whether an
    artefact verifies and what a loaded model holds. Any change to them is a new cache entry."""
    from guard.cache import code_key  # noqa: PLC0415

    return code_key(*sorted(Path(__file__).resolve().parent.glob("*.py")))


def _cache_key(path: Path, meta_path: Path, *extra) -> tuple[Path, bytes] | None:
    """(cache directory, the metadata's bytes) of this artefact and metadata as they are now, or None
    (no cache, or a file that cannot be read: then the artefact's own loader says what is wrong)."""
    from guard.cache import entry  # noqa: PLC0415

    try:
        artefact = hashlib.sha256(path.read_bytes()).hexdigest()
        meta = meta_path.read_bytes()
    except OSError:
        return None
    where = entry("model", path, artefact, hashlib.sha256(meta).hexdigest(), _CACHE_VERSION, _code_fingerprint(),
                  _installed("numpy"), *extra)
    return None if where is None else (where, meta)


def _read_cached(directory: Path, *, mmap: bool) -> dict | None:
    """The state kept in ``directory`` (arrays as ``.npy``, the rest as JSON), or None."""
    import numpy as np  # noqa: PLC0415

    try:
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        state = dict(index["values"])
        for name in index["arrays"]:
            arr = np.load(directory / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            state[name] = arr.view(np.ndarray) if mmap else arr  # a plain array (backed by the mapping)
        return state
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _write_cached(directory: Path, state: dict) -> None:
    """Write ``state`` beside a temporary name, then rename: a reader sees all of it or nothing."""
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    except OSError:
        return
    try:
        arrays = [k for k, v in state.items() if isinstance(v, np.ndarray)]
        values = {k: v for k, v in state.items() if k not in arrays}
        for name in arrays:
            np.save(tmp / f"{name}.npy", state[name], allow_pickle=False)
        text = json.dumps({"arrays": arrays, "values": values})
        if json.loads(text)["values"] != values:  # only what JSON gives back as it was (else: no cache)
            raise ValueError("not kept exactly by JSON")
        (tmp / "index.json").write_text(text, encoding="utf-8")
        os.replace(tmp, directory)
    except (OSError, TypeError, ValueError):
        shutil.rmtree(tmp, ignore_errors=True)


def load_default_model(settings: GuardSettings) -> ScamModel | None:
    """The trained model of the models directory when it verifies, else the shipped one, else None."""
    return find_model(settings)[0]


def find_intent(settings: GuardSettings):
    """The intent model in use and where it came from (None, None when there is none)."""
    from guard.classification import intent  # noqa: PLC0415

    return _load_first(settings, intent.ARTEFACT_NAME, load_intent_model)


def load_default_intent(settings: GuardSettings):
    """The intent model: one trained into the models directory, else the shipped one, else None."""
    return find_intent(settings)[0]


def describe(path: Path | None) -> str:
    """Where a model came from, in words (check-config, train, evaluate)."""
    if path is None:
        return "none (rules only)"
    return f"{path} ({'shipped' if path.parent == shipped('models') else 'trained'})"
