"""Finding the shipped model. Until a model artefact is trained and shipped, guard runs on rules only."""

from __future__ import annotations

from .classify import ScamModel
from .paths import shipped
from .settings import GuardSettings


def load_default_model(settings: GuardSettings) -> ScamModel | None:
    """The shipped model, or None when none is shipped."""
    artefact = shipped("models") / "guard-model.skops"
    if not artefact.is_file():
        return None
    from .model import load_model  # noqa: PLC0415 - scikit-learn is only imported when a model exists

    return load_model(artefact)
