"""`guard demo` (Maildir in, .eml files out) and `guard run`'s start-up checks."""

from __future__ import annotations

import pytest

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


# -- issue 18: the coordinator's side, a findable work directory, your own messages --------------------


def test_demo_defaults_to_guard_demo_in_the_working_directory_and_ends_with_the_digest(tmp_path, capsys,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-model"]) == 0
    out = capsys.readouterr().out
    work = tmp_path / "guard-demo"
    assert (work / ".guard-demo").is_file() and (work / "outbox").is_dir()
    # the digest of this run: the text printed, both forms written beside the outbox
    assert "the coordinator's digest of this run" in out
    text = (work / "digest.txt").read_text(encoding="utf-8")
    subject = text.splitlines()[0]
    assert subject.startswith("Subject: ") and subject in out
    body = text.split("\n\n", 1)[1].strip()
    assert body and body in out  # the whole text digest is printed
    html = (work / "digest.html").read_text(encoding="utf-8")
    assert "<html" in html.lower() and "scam" in html.lower()
    # how to see it again and how to remove it, as paths the user can type
    assert "guard digest --preview --journal guard-demo/journal.sqlite3" in out
    assert "guard demo --clean" in out and "guard demo --messages PATH" in out
    assert out.rstrip().splitlines()[-1].strip().startswith("remove it:")


def test_digest_preview_reads_any_journal(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-model"]) == 0
    demo_text = (tmp_path / "guard-demo" / "digest.txt").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["digest", "--preview", "--journal", "guard-demo/journal.sqlite3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == demo_text.splitlines()[0]  # the same digest (subject with its counts)
    assert main(["digest", "--preview", "--html", "--journal", "guard-demo/journal.sqlite3"]) == 0
    assert "<html" in capsys.readouterr().out.lower()
    assert main(["digest", "--preview", "--journal", "absent.sqlite3"]) == 2
    assert "absent.sqlite3: no such journal" in capsys.readouterr().err


def test_demo_clean_removes_only_a_demo_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-model"]) == 0
    assert main(["demo", "--clean"]) == 0
    assert not (tmp_path / "guard-demo").exists()
    assert f"removed {tmp_path / 'guard-demo'}" in capsys.readouterr().out
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    assert main(["demo", "--clean", "--workdir", str(other)]) == 2
    assert (other / "precious.txt").exists()


def _mbox(paths) -> bytes:
    out = b""
    for p in paths:
        out += b"From someone@example.org Mon Jan  5 10:00:00 2026\n" + p.read_bytes().replace(b"\r\n", b"\n") + b"\n"
    return out


@pytest.mark.parametrize("layout", ["eml-directory", "mbox", "maildir"])
def test_demo_on_your_own_messages(tmp_path, capsys, layout):
    samples = sorted(samples_dir().glob("*.eml"))
    mine = [p for p in samples if p.name.startswith(("scam-", "inquiry-"))]
    if layout == "eml-directory":
        given = tmp_path / "exported"
        (given / "sub").mkdir(parents=True)
        for i, p in enumerate(mine):
            (given / ("sub" if i % 2 else "") / f"m{i}.eml").write_bytes(p.read_bytes())
    elif layout == "mbox":
        given = tmp_path / "Inbox.mbox"
        given.write_bytes(_mbox(mine))
    else:
        given = tmp_path / "Mail"
        for sub in ("cur", "new", "tmp"):
            (given / sub).mkdir(parents=True)
        for i, p in enumerate(mine):
            (given / "cur" / f"17000000{i:02d}.M{i}P1.host:2,S").write_bytes(p.read_bytes())
    work = tmp_path / "demo"
    assert main(["demo", "--messages", str(given), "--workdir", str(work), "--no-model"]) == 0
    out = capsys.readouterr().out
    assert f"guard demo: {len(mine)} of your messages" in out
    table = out.split("the coordinator's digest")[0]
    assert table.count(" scam ") >= sum(p.name.startswith("scam-") for p in mine) - 1
    assert "inquiry" in table
    filed = list((work / "Maildir").glob(".Guard.*/cur/*"))
    assert len(filed) == len(mine)  # every message filed into a Guard folder, as guard run would
    assert (work / "digest.html").is_file() and "the coordinator's digest of this run" in out
    if layout == "mbox":
        assert "Inbox.mbox#1" in out


def test_demo_on_messages_that_are_not_there(tmp_path, capsys):
    assert main(["demo", "--messages", str(tmp_path / "nothing"), "--workdir", str(tmp_path / "d"), "--no-model"]) == 2
    assert "no messages found" in capsys.readouterr().err
