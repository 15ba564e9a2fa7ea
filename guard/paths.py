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
    """Where `guard train` and the scheduled retrain write the models they make, and where guard looks
    first for a verified model: ``learning.models_dir``, by default ``models/`` beside the journal
    (the state directory). Never the shipped ``models/``."""
    configured = settings.learning.models_dir
    return Path(configured) if configured is not None else Path(settings.daemon.journal).parent / "models"


def inside_package(path: Path) -> bool:
    """True when ``path`` lies in the installed guard package (a wheel's ``guard/_shipped/``)."""
    try:
        path.resolve().relative_to(_PKG)
    except ValueError:
        return False
    return True
