"""Where the shipped data lives, in a source checkout and in an installed wheel.

A wheel carries ``rules/``, ``templates/``, ``models/`` and ``events/`` under
``guard/_shipped/`` (see pyproject.toml); a checkout has them at the top level.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """The directory of shipped data called ``name`` (rules, templates, models or events)."""
    installed = _PKG / "_shipped" / name
    if installed.is_dir():
        return installed
    return _PKG.parent / name


def bundled_config() -> Path:
    """The sample institute configuration used when no file is given."""
    return _PKG / "defaults.toml"


def samples_dir() -> Path:
    return _PKG / "samples"


def state_models_dir(settings) -> Path:
    """Where scheduled retraining keeps the models it swaps in: ``models/`` beside the journal."""
    return Path(settings.daemon.journal).parent / "models"
