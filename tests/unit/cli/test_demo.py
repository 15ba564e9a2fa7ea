"""`guard demo` (Maildir in, .eml files out) and `guard run`'s start-up checks."""

from __future__ import annotations

from guard.cli.main import main
from guard.paths import samples_dir


def test_demo_runs_the_pipeline_over_the_samples(tmp_path, capsys):
    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work), "--no-model"]) == 0
    out = capsys.readouterr().out
    for sample in samples_dir().glob("*.eml"):
        assert sample.name in out
    written = sorted((work / "outbox").glob("*.eml"))
    for p in written:
        assert p.name in out
        head = p.read_bytes().split(b"\r\n\r\n", 1)[0]
        assert b"X-Guard-Loop: events@crm.cat" in head and b"Auto-Submitted: auto-" in head
    filed = [p for p in (work / "Maildir").glob(".Guard.*/cur/*")]
    left = list((work / "Maildir" / "new").iterdir()) + list((work / "Maildir" / "cur").iterdir())
    assert len(filed) + len(left) == len(list(samples_dir().glob("*.eml")))
    # a second run in the same directory starts afresh
    assert main(["demo", "--workdir", str(work), "--no-model"]) == 0
    assert len(list((work / "outbox").glob("*.eml"))) == len(written)


def test_demo_refuses_a_foreign_non_empty_directory(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--workdir", str(tmp_path), "--no-model"]) == 2
    assert "not a guard demo directory" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").exists()


def test_run_without_imap_settings_says_so(capsys):
    assert main(["run", "--once", "--no-model"]) == 2
    assert "needs an [imap] section" in capsys.readouterr().err
