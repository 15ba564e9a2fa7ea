"""Finding the models guard uses: the scam model (``guard-model.skops``) and the intent model
(``guard-intent.npz``).

For each, the one `guard train` (or the scheduled retrain) wrote into the models directory
(``learning.models_dir``, by default ``models/`` beside the journal) when it verifies (format,
SHA-256, library and feature versions), else the shipped one, else None (rules only). A trained
artefact that fails verification is logged and passed over; the shipped one is never replaced.
"""

from __future__ import annotations

import logging
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
    from guard.mail import language

    language.preload()  # first, while memory is low (see language.preload)

    def load(path: Path):
        from guard.classification.model import load_model  # noqa: PLC0415 - scikit-learn only when a model exists

        return load_model(path)

    return _load_first(settings, SCAM_ARTEFACT, load)


def load_default_model(settings: GuardSettings) -> ScamModel | None:
    """The trained model of the models directory when it verifies, else the shipped one, else None."""
    return find_model(settings)[0]


def find_intent(settings: GuardSettings):
    """The intent model in use and where it came from (None, None when there is none)."""
    from guard.classification import intent  # noqa: PLC0415

    return _load_first(settings, intent.ARTEFACT_NAME, intent.load)


def load_default_intent(settings: GuardSettings):
    """The intent model: one trained into the models directory, else the shipped one, else None."""
    return find_intent(settings)[0]


def describe(path: Path | None) -> str:
    """Where a model came from, in words (check-config, train, evaluate)."""
    if path is None:
        return "none (rules only)"
    return f"{path} ({'shipped' if path.parent == shipped('models') else 'trained'})"
