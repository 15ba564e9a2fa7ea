"""ImapMailbox against a scripted fake IMAPClient (MOVE fallback, folders, IDLE), Maildir, backoff, settings."""

from __future__ import annotations

import asyncio
import imaplib
from datetime import datetime, timezone

import pytest

from guard.daemon.service import Backoff
from guard.errors import ConfigError, PermanentIOError, TransientIOError
from guard.daemon.mailbox import ImapMailbox, MaildirMailbox
from guard.settings import ImapSettings, load_settings


def ids(message_set) -> tuple[int, ...]:
    """An IMAP message set as guard sends it ("3:5,9", or a list) as a tuple of UIDs."""
    if not isinstance(message_set, str):
        return tuple(message_set)
    out = []
    for part in message_set.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(out)


class FakeClient:
    """Records calls; capabilities and IDLE responses are scripted."""

    def __init__(self, caps=(b"IMAP4REV1", b"IDLE", b"MOVE", b"UIDPLUS"), idle_script=()):
        self.caps = caps
        self.calls: list[tuple] = []
        self.folders = {"INBOX"}
        self.idle_script = list(idle_script)
        self.uids = {5, 6}
        self.normalise_times = True

    # connection
    def starttls(self, ctx):
        self.calls.append(("starttls",))

    def login(self, user, password):
        self.calls.append(("login", user))
        if password == "wrong":
            from imapclient.exceptions import LoginError

            raise LoginError("authentication failed")

    def oauth2_login(self, user, token):
        self.calls.append(("oauth2_login", user, token))

    def capabilities(self):
        return self.caps

    def list_folders(self, directory="", pattern="*"):
        return [((b"\\Noselect",), b".", "")]

    def folder_exists(self, name):
        return name in self.folders

    def create_folder(self, name):
        self.calls.append(("create", name))
        self.folders.add(name)

    def subscribe_folder(self, name):
        pass

    def select_folder(self, name):
        return {b"UIDVALIDITY": 77, b"EXISTS": len(self.uids)}

    def shutdown(self):
        self.calls.append(("shutdown",))

    def logout(self):
        self.calls.append(("logout",))

    # mail
    def search(self, criteria):
        self.calls.append(("search", tuple(criteria)))
        if criteria[1].endswith(":*"):
            lo = int(criteria[1].split(":")[0])
            return sorted(u for u in self.uids if u >= lo) or [max(self.uids)]
        return [u for u in ids(criteria[1]) if u in self.uids]

    def fetch(self, uids, items):
        assert not isinstance(uids, str), "imapclient's fetch takes UIDs as ints (it filters its answer by them)"
        return {u: {b"RFC822.SIZE": 12, b"INTERNALDATE": datetime(2026, 1, 5, 9, 0),
                    b"BODY[]<0>": b"Subject: x\r\n\r\n"} for u in ids(uids)}

    def move(self, uids, folder):
        self.calls.append(("move", ids(uids), folder))

    def copy(self, uids, folder):
        self.calls.append(("copy", ids(uids), folder))

    def add_flags(self, uids, flags, silent=False):
        self.calls.append(("add_flags", ids(uids), tuple(flags)))

    def uid_expunge(self, uids):
        self.calls.append(("uid_expunge", ids(uids)))

    def expunge(self, messages=None):  # pragma: no cover - must never be called without UIDs
        raise AssertionError("plain EXPUNGE would remove other clients' \\Deleted messages")

    def noop(self):
        self.calls.append(("noop",))

    # IDLE
    def idle(self):
        self.calls.append(("idle",))

    def idle_check(self, timeout=None):
        if self.idle_script:
            item = self.idle_script.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item
        import time

        time.sleep(timeout or 0.01)
        return []

    def idle_done(self):
        self.calls.append(("idle_done",))
        return (b"Idle terminated", [])


def settings(**kw) -> ImapSettings:
    base = dict(host="127.0.0.1", tls="none", username="events@crm.cat", password="secret", idle_seconds=5,
                poll_seconds=1)
    base.update(kw)
    return ImapSettings(**base)


def open_box(client: FakeClient, **kw) -> ImapMailbox:
    box = ImapMailbox(settings(**kw), folders=["Guard/Quarantine", "Guard/Review"],
                      client_factory=lambda *a, **k: client)
    assert asyncio.run(box.open()) == 77
    return box


def test_open_logs_in_creates_folders_with_the_servers_delimiter():
    c = FakeClient()
    box = open_box(c)
    assert ("login", "events@crm.cat") in c.calls
    assert ("create", "Guard.Quarantine") in c.calls and ("create", "Guard.Review") in c.calls
    assert box.folder_name("Guard/Routed") == "Guard.Routed"
    assert c.normalise_times is False  # INTERNALDATE with its time zone


def test_xoauth2_uses_the_token_provider():
    c = FakeClient()
    box = ImapMailbox(settings(), client_factory=lambda *a, **k: c, token_provider=lambda: "tok123")
    asyncio.run(box.open())
    assert ("oauth2_login", "events@crm.cat", "tok123") in c.calls
    assert not any(call[0] == "login" for call in c.calls)


def test_refused_login_is_permanent():
    c = FakeClient()
    box = ImapMailbox(settings(password="wrong"), client_factory=lambda *a, **k: c)
    with pytest.raises(PermanentIOError, match="login"):
        asyncio.run(box.open())


def test_move_uses_move_when_offered():
    c = FakeClient()
    box = open_box(c)
    assert asyncio.run(box.move(5, "Guard/Quarantine")) is True
    assert ("move", (5,), "Guard.Quarantine") in c.calls


def test_move_without_move_copies_flags_and_expunges_only_that_uid():
    c = FakeClient(caps=(b"IMAP4REV1", b"IDLE", b"UIDPLUS"))  # Exchange Online
    box = open_box(c)
    asyncio.run(box.move(6, "Guard/Quarantine"))
    tail = [call for call in c.calls if call[0] in ("copy", "add_flags", "uid_expunge", "move")]
    assert tail == [("copy", (6,), "Guard.Quarantine"), ("add_flags", (6,), (b"\\Deleted",)), ("uid_expunge", (6,))]


def test_move_without_move_or_uidplus_never_expunges():
    c = FakeClient(caps=(b"IMAP4REV1",))
    box = open_box(c)
    asyncio.run(box.move(6, "Guard/Quarantine"))
    assert not any(call[0] == "uid_expunge" for call in c.calls)
    assert ("copy", (6,), "Guard.Quarantine") in c.calls


def test_move_of_a_vanished_message_reports_false():
    c = FakeClient()
    box = open_box(c)
    assert asyncio.run(box.move(99, "Guard/Quarantine")) is False
    assert not any(call[0] == "move" for call in c.calls)


def test_uids_after_ignores_the_star_quirk():
    c = FakeClient()
    box = open_box(c)
    assert asyncio.run(box.uids_after(4)) == [5, 6]
    assert asyncio.run(box.uids_after(6)) == []  # "7:*" returns the last message: filtered out


def test_fetch_keeps_seen_and_reads_internaldate_as_utc():
    c = FakeClient()
    box = open_box(c)
    f = asyncio.run(box.fetch(5))
    assert f.raw == b"Subject: x\r\n\r\n" and f.arrived == datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    assert not f.truncated


def _wait(box, timeout=5.0):
    async def go():
        return await box.wait(timeout, asyncio.Event())

    return asyncio.run(go())


def test_idle_wakes_on_exists_and_ends_idle():
    c = FakeClient(idle_script=[[(b"OK", b"Still here")], [(3, b"EXISTS")]])
    box = open_box(c)
    assert _wait(box) == "changed"
    assert c.calls[-1] == ("idle_done",)


def test_idle_is_reissued_after_idle_seconds():
    c = FakeClient()
    box = open_box(c, idle_seconds=5)
    assert _wait(box, timeout=0.05) == "timeout"
    assert ("idle",) in c.calls and c.calls[-1] == ("idle_done",)


def test_bye_and_dead_sockets_are_transient():
    c = FakeClient(idle_script=[[(b"BYE", b"Server shutting down.")]])
    box = open_box(c)
    with pytest.raises(TransientIOError, match="BYE"):
        _wait(box)
    c2 = FakeClient(idle_script=[imaplib.IMAP4.abort("socket error: EOF")])
    box2 = open_box(c2)
    with pytest.raises(TransientIOError, match="abort"):
        _wait(box2)
    assert ("shutdown",) in c2.calls


def test_polling_without_idle():
    c = FakeClient(caps=(b"IMAP4REV1", b"MOVE"))
    box = open_box(c)
    assert not box.idle_supported
    assert _wait(box, timeout=0.05) == "timeout"
    assert ("noop",) in c.calls and ("idle",) not in c.calls


def test_stop_ends_idle_promptly():
    c = FakeClient()
    box = open_box(c)

    async def go():
        stop = asyncio.Event()
        stop.set()
        return await box.wait(60, stop)

    assert asyncio.run(go()) == "stopped"


def test_backoff_is_exponential_capped_and_jittered():
    b = Backoff(initial=1.0, cap=30.0)
    assert [b.delay(n, 1.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.delay(3, 0.0) == 2.0  # half of 4: the jitter spreads reconnects
    assert all(15 <= b.delay(20, r / 10) <= 30 for r in range(11))


def test_maildir_mailbox_round_trip(tmp_path):
    root = tmp_path / "Maildir"
    (root / "new").mkdir(parents=True)
    (root / "new" / "1.a.host").write_bytes(b"Subject: one\r\n\r\nx\r\n")
    (root / "new" / "2.b.host").write_bytes(b"Subject: two\r\n\r\ny\r\n")
    box = MaildirMailbox(root, folders=["Guard/Quarantine"])

    async def go():
        v = await box.open()
        uids = await box.uids_after(0)
        f = await box.fetch(uids[0])
        await box.flag(uids[1])
        moved = await box.move(uids[1], "Guard/Quarantine")
        return v, uids, f, moved, await box.uids_after(0)

    v, uids, f, moved, left = asyncio.run(go())
    assert uids == [1, 2] and f.raw.startswith(b"Subject: one") and moved and left == [1]
    moved_files = list((root / ".Guard.Quarantine" / "cur").iterdir())
    assert len(moved_files) == 1 and moved_files[0].name.endswith(":2,F")
    assert asyncio.run(MaildirMailbox(root).open()) == v  # UIDVALIDITY is kept


# -- settings --------------------------------------------------------------------------


def test_daemon_settings_are_validated(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    ok = settings(password=None, password_file=pw)
    assert ok.secret() == "secret" and ok.effective_port() == 143
    assert "secret" not in repr(settings()) and "secret" not in ok.describe()
    with pytest.raises(ValueError, match="loopback"):
        settings(host="imap.example.org", tls="none")
    with pytest.raises(ValueError, match="not both"):
        settings(password_file=pw)
    with pytest.raises(ValueError, match="cannot be read"):
        settings(password=None, password_file=tmp_path / "missing")
    with pytest.raises(ValueError, match="xoauth2"):
        settings(auth="xoauth2")
    with pytest.raises(ValueError):
        settings(idle_seconds=3600)  # beyond RFC 2177's 29 minutes


def test_config_file_errors_name_the_key(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[institute]\nname = "X Institute"\nshort_name = "XI"\nofficial_domains = ["x.org"]\n'
                   'events_address = "events@x.org"\n[institute.coordinator]\nname = "C"\naddress = "c@x.org"\n'
                   '[daemon]\nmax_replies_per_hour = 0\nloop_header = "X Bad"\n[daemon.folders]\nreview = "INBOX"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    text = str(exc.value)
    assert f"{cfg}: daemon.max_replies_per_hour:" in text
    assert f"{cfg}: daemon.loop_header:" in text
    assert "daemon.folders: " in text and "INBOX" in text


def test_a_batch_is_one_command_per_step_with_compact_uid_sets():
    from guard.daemon.mailbox import _uid_set

    assert _uid_set([9, 3, 4, 5, 11, 12]) == "3:5,9,11:12"
    assert _uid_set([7]) == "7"
    c = FakeClient()
    c.uids = {3, 4, 5, 9}
    mb = open_box(c)
    moved = asyncio.run(mb.move_many([3, 4, 5, 6, 9], "Guard/Quarantine"))
    assert moved == {3, 4, 5, 9}  # 6 was gone: reported, not an error
    assert [call for call in c.calls if call[0] == "move"] == [("move", (3, 4, 5, 9), "Guard.Quarantine")]
    fetched = asyncio.run(mb.fetch_many([3, 4]))
    assert sorted(fetched) == [3, 4] and fetched[3].raw.startswith(b"Subject")
