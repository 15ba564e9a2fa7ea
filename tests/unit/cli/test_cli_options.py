"""The command line as people type it (issue 18): --config before and after every subcommand,
--version, the README's command list, what classify's score is, what guard run without an account
says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guard.cli.main import build_parser, main
from guard.paths import bundled_config, samples_dir

REPO = Path(__file__).resolve().parents[3]


def _subcommands() -> dict:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


def _config(tmp_path: Path, name: str) -> Path:
    f = tmp_path / "guard.toml"
    f.write_text(bundled_config().read_text(encoding="utf-8").replace(
        'name = "Centre de Recerca Matemàtica"', f'name = "{name}"', 1), encoding="utf-8")
    return f


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_subcommand_takes_config_after_it(command, tmp_path):
    f = tmp_path / "x.toml"
    required = {"classify": ["a.eml"], "preview": ["inquiry_ack"]}.get(command, [])
    for argv in ([command, "--config", str(f), *required], ["--config", str(f), command, *required],
                 [command, "-c", str(f), *required]):
        assert build_parser().parse_args(argv).config == f, argv
    assert build_parser().parse_args([command, *required]).config is None


def test_config_after_the_subcommand_wins(tmp_path):
    a = tmp_path / "a.toml"
    assert build_parser().parse_args(["--config", str(a), "check-config", "--config", str(tmp_path / "b.toml")]
                                     ).config == tmp_path / "b.toml"


def test_check_config_with_config_after_the_subcommand(tmp_path, capsys):
    f = _config(tmp_path, "Institut After")
    assert main(["check-config", "--config", str(f), "--no-model"]) == 0  # as the README shows it
    out = capsys.readouterr().out
    assert f"configuration OK: {f}" in out and "Institut After" in out


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"guard {version('guard')}"


def test_readme_command_list_names_every_command():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^    guard ([a-z-]+)", text, re.M))
    assert set(_subcommands()) <= listed, f"README.md does not list: {sorted(set(_subcommands()) - listed)}"


def test_classify_text_output_says_what_its_score_is(capsys):
    inquiry = sorted(samples_dir().glob("inquiry-*.eml"))[0]
    assert main(["classify", "--explain", "--no-model", str(inquiry)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert re.search(r": inquiry \(scam score -?\d+\.\d\)", first), first
    assert "scores by tag: " in out and "inquiry " in out


def test_run_without_an_account_names_config_and_the_example(capsys):
    assert main(["run", "--once", "--no-model"]) == 2
    err = capsys.readouterr().err
    assert "needs an [imap] section" in err and "--config FILE" in err and "deploy/guard.example.toml" in err
