"""The layout is the architecture: imports point one way, from the pure core out to the IO edge.

Every ``import`` in ``guard/`` is read with :mod:`ast` (function-level imports included, so a
lazy import cannot hide a wrong direction), and each package may import only those below it:

    top level (settings, errors, paths, logging_setup)
    mail -> classification -> respond          (pure: no IO, no event loop)
    daemon, digest, learning                   (the IO edge and what it drives)
    cli                                        (everything)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "guard"

#: package -> the guard packages it must never import
FORBIDDEN = {
    "top": {"mail", "classification", "respond", "daemon", "digest", "learning", "cli"},
    "mail": {"classification", "respond", "daemon", "digest", "learning", "cli"},
    "classification": {"respond", "daemon", "digest", "learning", "cli"},
    "respond": {"daemon", "digest", "learning", "cli"},
    "digest": {"cli"},
    "learning": {"cli"},
    "daemon": {"cli"},
    "cli": set(),
}

#: the one edge up from the top level: settings folds protected names with mail's text helper, a
#: leaf module that imports nothing of guard's
TOP_MAY_USE = {"guard.mail.textutil"}


def _package_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    if rel.parts == ("__main__.py",):
        return "cli"  # ``python -m guard`` is the command line
    return rel.parts[0] if len(rel.parts) > 1 else "top"


def _module_of(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (guard uses absolute imports)"
            if node.module:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                modules = [s for s in subs if _is_module(s)]
                # `from guard.x import y`: the module guard.x.y when it is one, else guard.x
                out.update(modules if len(modules) == len(subs) else [node.module, *modules])
    return {m for m in out if m == "guard" or m.startswith("guard.")}


MODULES = sorted(p for p in PKG.rglob("*.py") if "_shipped" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_one_way(path):
    pkg = _package_of(path)
    bad = []
    for name in _imports(path):
        parts = name.split(".")
        if len(parts) < 2:
            continue
        target = parts[1] if (PKG / parts[1]).is_dir() else "top"
        if pkg == "top" and name in TOP_MAY_USE:
            continue
        if target in FORBIDDEN[pkg]:
            bad.append(name)
    assert not bad, f"{path.relative_to(PKG)} ({pkg}) must not import {sorted(bad)}"


def test_no_import_cycles_between_modules():
    graph = {}
    names = {_module_of(p): p for p in MODULES}
    for mod, path in names.items():
        graph[mod] = {n for n in _imports(path) if n in names and n != mod}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(graph[m]):
            visit(n)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_subpackage_says_what_lives_there():
    for d in sorted(p for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((d / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"{d.name}/__init__.py: docstring must say what lives there and what it may import"


def test_tests_mirror_the_package_layout():
    """Unit tests of a subpackage live in tests/unit/<subpackage>/; the top of tests/unit holds only
    tests of top-level modules and of the repository (settings, logging, pickling, packaging, deploy, layout)."""
    tests = PKG.parent / "tests" / "unit"
    subpackages = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").is_file())
    for sub in subpackages:
        assert list((tests / sub).glob("test_*.py")), f"tests/unit/{sub}/ has no tests"
    top = {"test_settings", "test_log_privacy", "test_log_redaction_identifiers", "test_packaging",
           "test_deploy", "test_layout", "test_bench_throughput", "test_pickling"}
    stray = sorted(p.stem for p in tests.glob("test_*.py") if p.stem not in top)
    assert not stray, f"tests/unit/{stray}: move into the subpackage they test"
