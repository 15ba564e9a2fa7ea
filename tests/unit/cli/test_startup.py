"""A one-shot ``guard classify`` starts lean (issue 16) and gives the very same answers.

The start-up work that was taken out of the classify path must stay out (no event loop, no IMAP or
SMTP client, no templates, no metrics, no pydantic-settings, no email_validator once its addresses
are known), and each shortcut must give what the long way gives: the settings validated without
pydantic-settings, the models and the language model read from guard's cache, ``classify`` parsed
by a parser that has only ``classify``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import guard.cli.main  # noqa: F401 - the module (the package ``guard.cli`` exports the function ``main``)
from guard.paths import samples_dir

cli = sys.modules["guard.cli.main"]

REPO = Path(__file__).resolve().parents[3]
SAMPLE = samples_dir() / "report-conference-committee-gmail.eml"

#: never imported by ``guard classify FILE`` (bench/startup.py measures what that saves)
NOT_ON_CLASSIFY_PATH = ("asyncio", "imapclient", "aiosmtplib", "jinja2", "prometheus_client", "pydantic_settings",
                        "email_validator", "sqlite3", "guard.daemon", "guard.digest", "guard.learning",
                        "guard.respond", "guard.cli.daemon", "guard.cli.digest", "guard.cli.model",
                        "guard.cli.templates", "sklearn", "scipy")

_PROBE = """
import json, sys, io, contextlib
from guard.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _child_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GUARD_") and k != "CREDENTIALS_DIRECTORY"}
    env["GUARD_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _probe(args: list[str], cache: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=_child_env(cache),
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A guard cache filled by one classify (the first start after an install)."""
    cache = tmp_path_factory.mktemp("guard-cache")
    first = _probe(["classify", "--json", str(SAMPLE)], cache)
    assert first["code"] == 0
    return cache, first["out"]


def test_classify_path_stays_lean(warm_cache):
    cache, first_out = warm_cache
    second = _probe(["classify", "--json", str(SAMPLE)], cache)
    assert second["code"] == 0 and second["out"] == first_out  # the cache changes nothing
    loaded = [name for name in NOT_ON_CLASSIFY_PATH if _loaded(second["modules"], name)]
    assert loaded == [], f"guard classify imported {loaded}"


def test_rules_only_path_stays_lean(warm_cache):
    cache, _ = warm_cache
    r = _probe(["classify", "--json", "--no-model", str(SAMPLE)], cache)
    assert r["code"] == 0
    assert [n for n in NOT_ON_CLASSIFY_PATH if _loaded(r["modules"], n)] == []


def test_no_cache_gives_the_same_verdicts(warm_cache, tmp_path):
    cache, first_out = warm_cache
    env = _child_env(cache)
    env["GUARD_CACHE_DIR"] = ""  # no cache at all: every loader takes the long way
    r = subprocess.run([sys.executable, "-c", _PROBE, "classify", "--json", str(SAMPLE)], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["out"] == first_out


# -- the classify-only parser -------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["classify", "a.eml"],
    ["classify", "--json", "--explain", "a.eml", "b.eml"],
    ["--config", "x.toml", "classify", "--no-model", "-"],
    ["classify", "--config", "x.toml", "--json", "a.eml"],
    ["-c", "x.toml", "classify", "--exp", "a.eml"],  # an abbreviation
])
def test_light_parser_parses_as_the_whole_parser(argv):
    light = cli.build_parser(only_classify=True).parse_args(argv)
    whole = cli.build_parser().parse_args(argv)
    assert vars(light) == vars(whole)
    assert vars(cli._parse(argv)) == vars(whole)


@pytest.mark.parametrize("argv", [["classify"], ["classify", "--bogus", "a.eml"], ["run", "classify"],
                                  ["classify", "--help"], ["--version", "classify"]])
def test_anything_else_goes_to_the_whole_parser(argv, capsys):
    with pytest.raises(SystemExit) as light:
        cli._parse(argv)
    light_io = capsys.readouterr()
    with pytest.raises(SystemExit) as whole:
        cli.build_parser().parse_args(argv)
    assert light.value.code == whole.value.code and capsys.readouterr() == light_io


def test_other_commands_are_parsed_by_the_whole_parser():
    args = cli._parse(["check-config", "--no-model"])
    assert args.command == "check-config" and args.func is cli.cmd_check_config
    assert isinstance(cli.build_parser(), argparse.ArgumentParser)


def test_garbage_collection_resumes(capsys):
    import gc

    assert gc.isenabled()
    assert cli.main(["classify", "--json", "--no-model", str(SAMPLE)]) == 0
    assert gc.isenabled()
    capsys.readouterr()


_EXIT_PROBE = """
import atexit, gc, sys
from guard.cli.main import entry
atexit.register(lambda: print("atexit ran, frozen objects: %d" % gc.get_freeze_count(), file=sys.stderr))
entry()
"""


@pytest.mark.parametrize("args, code", [(["classify", "--json", "--no-model", str(SAMPLE)], 0),
                                        (["classify", "--no-model", "--config", "/nonexistent/guard.toml",
                                          str(SAMPLE)], 2)])
def test_executable_freezes_the_heap_and_exits_as_main_returns(args, code, warm_cache):
    """``entry`` (the executable) exits with main's code, its output and atexit handlers intact, and with
    the heap frozen, so that the interpreter's final collection does not walk the start-up's objects."""
    r = subprocess.run([sys.executable, "-c", _EXIT_PROBE, *args], capture_output=True, text=True,
                       env=_child_env(warm_cache[0]), cwd=REPO, timeout=300)
    assert r.returncode == code, r.stderr
    frozen = int(r.stderr.rsplit("frozen objects: ", 1)[1].split()[0])
    assert frozen > 10_000
    if code == 0:
        assert json.loads(r.stdout)["category"] == "report"
    else:
        assert "guard:" in r.stderr and "/nonexistent/guard.toml" in r.stderr


def test_bench_startup_runs(tmp_path):
    """bench/startup.py (one-shot wall time, cold start, peak RSS) on a tiny budget."""
    out = tmp_path / "startup.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "startup.py"), "--module", "--runs", "2", "--warmup", "1",
                        "--messages", "3", "--no-model", "--out", str(out)], capture_output=True, text=True,
                       env=_child_env(tmp_path / "cache"), cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["one_shot"]["runs"] == 2 and data["one_shot"]["wall_s_median"] > 0
    assert data["cold_cache"]["same_output"] and data["peak_rss"]["verdict_lines"] == 3
    assert data["host"]["loadavg_start"] and "load average" in r.stdout
