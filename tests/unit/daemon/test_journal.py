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


def _sql_counts(j: Journal, since: datetime) -> tuple[int, int, int]:
    """The breaker's three counts straight from SQL (what the in-memory window must agree with)."""
    db, ts = j.db, since.timestamp()
    auto = db.execute("SELECT COUNT(*) FROM replies WHERE at >= ? AND template NOT IN "
                      "('breaker_alert', 'loop_alert', 'to-coordinator')", (ts,)).fetchone()[0]
    alerts = db.execute("SELECT COUNT(*) FROM replies WHERE at >= ? AND template = 'breaker_alert'",
                        (ts,)).fetchone()[0]
    dom = db.execute("SELECT COUNT(*) FROM replies WHERE at >= ? AND recipient LIKE '%@example.org' AND template "
                     "NOT IN ('breaker_alert', 'loop_alert', 'to-coordinator')", (ts,)).fetchone()[0]
    return auto, alerts, dom


def _window_counts(j: Journal, since: datetime) -> tuple[int, int, int]:
    return (j.replies_since(since), j.replies_since(since, template="breaker_alert"),
            j.replies_to_domain("example.org", since))


def test_breaker_counts_in_memory_agree_with_sql_through_failures_rollbacks_and_other_writers(tmp_path):
    from guard.respond.prepare import LOOP_ALERT, TO_COORDINATOR

    assert (LOOP_ALERT, TO_COORDINATOR) == ("loop_alert", "to-coordinator")  # the SQL above spells them
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    outboxes = []
    for i in range(80):
        now = T0 + timedelta(minutes=3 * i)
        row = j.begin(Key("events@crm.cat", "INBOX", 7, 100 + i), message_id=None, arrived=now, now=now)
        rcpt = f"p{i}@example.org" if i % 3 else f"p{i}@elsewhere.net"
        outgoing = [out(recipient=rcpt)] + ([out("alert", "breaker_alert", "coord@crm.cat")] if i % 7 == 0 else [])
        decide(j, row.id, outgoing, now=now)
        outboxes += [o.id for o in j.outbox(row.id)]
        since = now - timedelta(hours=1)
        assert _window_counts(j, since) == _sql_counts(j, since)
        if i == 10:
            j.mark_failed(outboxes[3], "550 no such user")  # its history row is deleted
        if i == 20:
            with pytest.raises(RuntimeError):
                with j.transaction():
                    r2 = j.begin(Key("events@crm.cat", "INBOX", 7, 999), message_id=None, arrived=now, now=now)
                    decide(j, r2.id, [out(recipient="late@example.org")], now=now)
                    assert _window_counts(j, since) == _sql_counts(j, since)
                    raise RuntimeError("batch failed")
        if i == 30:  # another connection deletes history
            other = sqlite3.connect(path)
            other.execute("DELETE FROM replies WHERE id % 2 = 0")
            other.commit()
            other.close()
        assert _window_counts(j, since) == _sql_counts(j, since)
    # a since before the window's floor is answered from SQL
    assert _window_counts(j, T0 - timedelta(days=1)) == _sql_counts(j, T0 - timedelta(days=1))
    # the window keeps about the last hour: memory does not grow with the journal
    assert j._window.floor > T0.timestamp()


# -- card numbers masked in the verdict's JSON -------------------------------------------------

from hypothesis import given, settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from guard.daemon.journal import _masked, _masked_json  # noqa: E402

_CARDISH = st.sampled_from(["4111 1111 1111 1111", "4111111111111111", "5500-0000-0000-0004", "378282246310005",
                            "4111 1111 1111 1112", "0000000000000", "12345678901234567890"])
_PIECES = st.one_of(st.text(max_size=12), _CARDISH, st.sampled_from(["\x01", "\x1f", '"', "\\", "\n", "7", " ", "-"]))
_STRINGS = st.lists(_PIECES, max_size=6).map("".join)
_VALUES = st.recursive(
    st.one_of(_STRINGS, st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_STRINGS, inner, max_size=4)),
    max_leaves=12)


@hsettings(max_examples=400, deadline=None)
@given(_VALUES)
def test_the_one_scan_json_of_a_verdict_masks_as_the_walk_over_its_strings(value):
    import json

    assert _masked_json(value) == json.dumps(_masked(value), ensure_ascii=False)


def test_a_card_number_after_a_control_character_is_masked_in_the_json():
    import json

    text = _masked_json({"reasons": [{"description": "\x014111111111111111"}]})  # JSON: \u00014111...
    assert "4111111111111111" not in text
    assert json.loads(text)["reasons"][0]["description"] == "\x01**** **** **** 1111"
