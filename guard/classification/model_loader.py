"""Finding the shipped model. Until a model artefact is trained and shipped, guard runs on rules only."""

from __future__ import annotations

from guard.classification.classify import ScamModel
from guard.paths import shipped, state_models_dir
from guard.settings import GuardSettings


def load_default_model(settings: GuardSettings) -> ScamModel | None:
    """The shipped model, or None when none is shipped."""
    from guard.mail import language

    language.preload()  # first, while memory is low (see language.preload)
    artefact = shipped("models") / "guard-model.skops"
    if settings.learning.retrain_hours > 0:  # a model the scheduled retrain swapped in (guard/learning/retrain.py)

        if (state_models_dir(settings) / "guard-model.skops").is_file():
            artefact = state_models_dir(settings) / "guard-model.skops"
    if not artefact.is_file():
        return None
    from guard.classification.model import load_model  # noqa: PLC0415 - scikit-learn is only imported when a model exists

    return load_model(artefact)


def load_default_intent(settings: GuardSettings):
    """The intent model: one retrained into the state directory, else the shipped one, else None."""
    from guard.classification import intent  # noqa: PLC0415

    artefact = shipped("models") / intent.ARTEFACT_NAME
    if settings.learning.retrain_hours > 0 and (state_models_dir(settings) / intent.ARTEFACT_NAME).is_file():
        artefact = state_models_dir(settings) / intent.ARTEFACT_NAME
    if not artefact.is_file():
        return None
    return intent.load(artefact)
