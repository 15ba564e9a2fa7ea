"""Shared fixtures: the bundled settings, the shipped rules and a classifier (no network, no event loop)."""

from __future__ import annotations

import pytest

from guard.classification.assemble import build_classifier, load_rules
from guard.settings import load_settings


@pytest.fixture(scope="session")
def settings():
    return load_settings()


@pytest.fixture(scope="session")
def ruleset(settings):
    return load_rules(settings)


@pytest.fixture(scope="session")
def classifier(settings, ruleset):
    return build_classifier(settings, ruleset=ruleset)


pytest_plugins = ["skip_banner"]  # tests/skip_banner.py: every skip listed at the end of the run
