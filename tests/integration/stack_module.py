"""tests/integration/conftest.py as a module of its own, for test files that need its classes.

The name "conftest" is ambiguous when unit and integration tests run in one session, so it
is loaded once under a name of its own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def integration_conftest():
    name = "guard_integration_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("conftest.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while the class is made
        spec.loader.exec_module(mod)
    return sys.modules[name]
