"""The journal: migrations, WAL, ledger states, outbox states, reply history, UIDVALIDITY."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from guard.errors import ConfigError
from guard.daemon.journal import MIGRATIONS, Journal, Key, Outgoing

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
K = Key("events@crm.cat", "INBOX", 7, 42)


def out(kind="reply", template="inquiry_ack", recipient="pat@example.org") -> Outgoing:
    return Outgoing(kind, template, recipient, "", f"<{kind}.{template}@crm.cat>", b"raw bytes")


def decide(j: Journal, row_id: int, outgoing=(), now=T0) -> None:
    j.record_decision(row_id, category="inquiry", verdict={"category": "inquiry"}, plan=["reply:inquiry_ack"],
                      folder="Guard/Routed", flag=False, suppressed=[], outgoing=outgoing, mode="live", now=now)


def test_fresh_journal_is_migrated_and_in_wal_mode(tmp_path):
    j = Journal(tmp_path / "j.sqlite3")
    assert j.schema_version() == len(MIGRATIONS)
    assert j.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    j.close()
    j2 = Journal(tmp_path / "j.sqlite3")  # reopening applies nothing twice
    assert j2.db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (99)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="newer than this guard"):
        Journal(path)


def test_ledger_survives_reopen(tmp_path):
    j = Journal(tmp_path / "j.sqlite3")
    row = j.begin(K, message_id="<m@x>", arrived=T0, now=T0)
    decide(j, row.id, [out()])
    j.close()
    j = Journal(tmp_path / "j.sqlite3")
    row = j.get(K)
    assert row.state == "decided" and row.message_id == "<m@x>" and row.folder == "Guard/Routed"
    assert [o.state for o in j.outbox(row.id)] == ["intent"]


def test_begin_counts_attempts_only_before_a_decision():
    j = Journal(":memory:")
    assert j.begin(K, message_id=None, arrived=None, now=T0).attempts == 1
    assert j.begin(K, message_id=None, arrived=None, now=T0).attempts == 2
    decide(j, j.get(K).id)
    assert j.begin(K, message_id=None, arrived=None, now=T0).attempts == 2


def test_outbox_states_and_the_ambiguous_resend():
    j = Journal(":memory:")
    row = j.begin(K, message_id=None, arrived=None, now=T0)
    decide(j, row.id, [out("forward", "forward_summary", "coord@crm.cat"), out()])
    fwd, reply = j.outbox(row.id)
    assert (fwd.seq, reply.seq) == (0, 1)
    j.mark_sending(fwd.id, T0)  # the commit point; a crash here leaves it in "sending" ...
    j.mark_unconfirmed(fwd.id, T0)  # ... which the next run takes as sent, never sends twice
    assert j.outbox(row.id)[0].state == "sent" and j.outbox(row.id)[0].last_error.startswith("unconfirmed")
    j.mark_unconfirmed(reply.id, T0)  # only a row at its commit point can be taken as sent
    assert j.outbox(row.id)[1].state == "intent"
    j.mark_retry(reply.id, "451 try later", T0 + timedelta(minutes=1))
    assert j.next_retry() == T0 + timedelta(minutes=1)
    j.mark_failed(reply.id, "550 no such user")
    assert [o.state for o in j.outbox(row.id)] == ["sent", "failed"]
    assert j.next_retry() is None
    j.mark_done(row.id, T0)
    assert j.get(K).state == "done" and j.unfinished(K.account, K.mailbox) == []


def test_reply_history_counts_intents_and_forgets_failures():
    j = Journal(":memory:")
    row = j.begin(K, message_id=None, arrived=None, now=T0)
    decide(j, row.id, [out(), out("forward", "forward_summary", "coord@crm.cat")])
    assert j.last_reply("PAT@example.org", "inquiry_ack") == T0
    assert j.last_reply("pat@example.org", "report_verdict") is None
    assert j.replies_since(T0 - timedelta(hours=1)) == 1  # forwards are not replies
    reply = j.outbox(row.id)[0]
    j.mark_failed(reply.id, "550")
    assert j.replies_since(T0 - timedelta(hours=1)) == 0


def test_uidvalidity_change_is_recorded():
    j = Journal(":memory:")
    assert j.note_uidvalidity("a", "INBOX", 7, T0) is False  # first sight
    assert j.note_uidvalidity("a", "INBOX", 7, T0) is False
    later = T0 + timedelta(days=1)
    assert j.note_uidvalidity("a", "INBOX", 8, later) is True
    st = j.mailbox_state("a", "INBOX", later + timedelta(days=1))
    assert st.uidvalidity == 8 and st.first_start == T0 and st.uidvalidity_reset == later


def test_watermark_message_id_lookup_and_adoption():
    j = Journal(":memory:")
    j.begin(K, message_id="<m@x>", arrived=None, now=T0)
    j.begin(Key(K.account, K.mailbox, K.uidvalidity, 50), message_id="<n@x>", arrived=None, now=T0)
    assert j.max_uid(K.account, K.mailbox, 7) == 50 and j.max_uid(K.account, K.mailbox, 8) == 0
    assert j.by_message_id(K.account, "<m@x>").key == K
    assert j.by_message_id(K.account, "<m@x>", exclude=K) is None
    new = Key(K.account, K.mailbox, 8, 3)
    j.adopt(j.get(K).id, new, T0)
    assert j.get(new).message_id == "<m@x>" and j.get(K) is None


def test_poison_and_skip():
    j = Journal(":memory:")
    row = j.begin(K, message_id=None, arrived=None, now=T0)
    j.record_error(row.id, "RuntimeError while deciding", T0)
    j.mark_poison(row.id, "failed 3 times", "Guard/Review", T0)
    row = j.get(K)
    assert row.state == "poison" and row.flag and row.error == "RuntimeError while deciding"
    k2 = Key(K.account, K.mailbox, K.uidvalidity, 43)
    j.record_skip(k2, message_id="<d@x>", arrived=None, note="duplicate", now=T0)
    assert j.get(k2).state == "done" and j.counts() == {"messages.poison": 1, "messages.done": 1}
