"""The journal: SQLite (WAL) holding the ledger, every decision, the outbox and the reply history.

It is what makes guard restartable at any instant:

* **ledger** (``messages``): one row per message, keyed by (account, mailbox,
  UIDVALIDITY, UID) and also findable by Message-ID. States::

      new ──► decided ──► done
       │                   ▲
       └──► poison         └── (sends finished or failed permanently, move done)

  ``attempts`` counts how often processing of a ``new`` row started; a message
  that keeps failing (or keeps crashing guard) becomes ``poison``.
* **outbox**: the rendered bytes of every reply, forward and alert, written in
  the same transaction as the decision (the *intent*). States ``intent`` ->
  ``sending`` -> ``sent``, or ``failed`` (permanent, surfaced). ``sending`` is
  committed at the *commit point* of the SMTP transaction: the whole message text
  is with the kernel and only its final dot is still to be written (see
  :class:`guard.daemon.mailer.SmtpMailer`). A crash before it: the server never saw the
  dot and dropped the text; the send is still an intent and goes out at the next
  start. A crash after it: the kernel delivers the dot after the process is gone
  and the server queues the message; a row left in ``sending`` is therefore taken
  as sent (``sent``, note "unconfirmed", logged and listed in the digest), never
  sent again. The window between the commit and the dot's write is a few
  microseconds with no await in between. A lost *connection* after the dot is
  different: the server may have died, so that is retried as RFC 5321 asks.
* **replies**: every automatic reply committed to be sent, for the reply gate's
  per-sender window and the hourly circuit breaker.
* **mailboxes**: UIDVALIDITY, the first start and the last UIDVALIDITY reset.

Schema changes are numbered migrations applied at open (``schema_version``).
Times are UTC epoch seconds. Nothing here logs or stores credentials.
"""

from __future__ import annotations

import bisect
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from guard.mail.textutil import find_card_numbers, mask_card_numbers
from guard.respond.prepare import LOOP_ALERT, TO_COORDINATOR

MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE mailboxes (
        account TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        uidvalidity INTEGER,
        first_start REAL NOT NULL,
        uidvalidity_reset REAL,
        PRIMARY KEY (account, mailbox)
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        message_id TEXT,
        state TEXT NOT NULL CHECK (state IN ('new', 'decided', 'done', 'poison')),
        attempts INTEGER NOT NULL DEFAULT 0,
        arrived REAL,
        category TEXT,
        verdict TEXT,
        plan TEXT,
        folder TEXT,
        flag INTEGER NOT NULL DEFAULT 0,
        suppressed TEXT,
        mode TEXT,
        note TEXT,
        error TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        UNIQUE (account, mailbox, uidvalidity, uid)
    );
    CREATE INDEX messages_by_message_id ON messages (account, message_id);
    CREATE INDEX messages_by_state ON messages (state);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        message INTEGER NOT NULL REFERENCES messages (id),
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        template TEXT NOT NULL,
        recipient TEXT NOT NULL,
        envelope_from TEXT NOT NULL,
        message_id TEXT NOT NULL,
        raw BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('intent', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        created REAL NOT NULL,
        sent REAL,
        UNIQUE (message, seq)
    );
    CREATE INDEX outbox_by_state ON outbox (state, next_attempt);
    CREATE TABLE replies (
        id INTEGER PRIMARY KEY,
        recipient TEXT NOT NULL,
        template TEXT NOT NULL,
        at REAL NOT NULL,
        outbox INTEGER REFERENCES outbox (id)
    );
    CREATE INDEX replies_by_recipient ON replies (recipient, template, at);
    CREATE INDEX replies_by_time ON replies (at);
    """,
    # 2: the digest and learning from corrections (guard.digest.records): facts about each message
    # without its body, the digest queue and sent digests (the watermark), allow/deny lists, labels
    """
    CREATE TABLE message_facts (
        message INTEGER PRIMARY KEY REFERENCES messages (id),
        sender TEXT, subject TEXT, date REAL, inner_sender TEXT, inner_subject TEXT, fingerprint TEXT
    );
    CREATE TABLE digest_queue (
        id INTEGER PRIMARY KEY,
        message INTEGER NOT NULL REFERENCES messages (id),
        kind TEXT NOT NULL DEFAULT 'final',
        at REAL NOT NULL,
        UNIQUE (message, kind)
    );
    CREATE TABLE digests (
        id INTEGER PRIMARY KEY,
        upto INTEGER NOT NULL,
        period_start REAL,
        period_end REAL NOT NULL,
        recipient TEXT NOT NULL,
        envelope_from TEXT NOT NULL,
        message_id TEXT NOT NULL,
        raw BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('intent', 'sent')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created REAL NOT NULL,
        sent REAL
    );
    CREATE TABLE sender_lists (
        list TEXT NOT NULL CHECK (list IN ('allowlist', 'denylist')),
        entry TEXT NOT NULL,
        added REAL NOT NULL,
        source TEXT,
        PRIMARY KEY (list, entry)
    );
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        message_id TEXT,
        sender TEXT,
        label TEXT NOT NULL CHECK (label IN ('scam', 'genuine')),
        entry TEXT,
        path TEXT,
        message INTEGER REFERENCES messages (id),
        state TEXT NOT NULL,
        at REAL NOT NULL,
        UNIQUE (account, folder, uidvalidity, uid)
    );
    CREATE TABLE guard_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
    # 3: the digest's commit point (when it was handed to the SMTP server; see guard.digest.send)
    """
    ALTER TABLE digests ADD COLUMN handed_over REAL
    """,
    # 4: what a message is besides its Message-ID (a duplicate has the same Message-ID *and* content;
    # see guard.daemon.executor.content_digest); NULL for rows of before
    """
    ALTER TABLE messages ADD COLUMN content TEXT
    """,
]

FINAL_STATES = ("done", "poison")


def _ts(t: datetime) -> float:
    return t.timestamp()


def _dt(x: float | None) -> datetime | None:
    return None if x is None else datetime.fromtimestamp(x, timezone.utc)


@dataclass(frozen=True)
class Key:
    account: str
    mailbox: str
    uidvalidity: int
    uid: int

    def __str__(self) -> str:
        return f"{self.account}/{self.mailbox};UIDVALIDITY={self.uidvalidity};UID={self.uid}"


@dataclass(frozen=True)
class Row:
    id: int
    key: Key
    message_id: str | None
    state: str
    attempts: int
    arrived: datetime | None
    category: str | None
    folder: str | None
    flag: bool
    note: str | None
    error: str | None
    plan: list | None
    suppressed: list | None
    #: the content digest (None: a row from before migration 4, or not read yet)
    content: str | None = None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    message: int
    seq: int
    kind: str
    template: str
    recipient: str
    envelope_from: str
    message_id: str
    raw: bytes
    state: str
    attempts: int
    next_attempt: datetime
    last_error: str | None


@dataclass(frozen=True)
class MailboxState:
    uidvalidity: int | None
    first_start: datetime
    uidvalidity_reset: datetime | None


@dataclass(frozen=True)
class Outgoing:
    """What the journal needs of a rendered message (see guard.respond.render.Rendered)."""

    kind: str
    template: str
    recipient: str
    envelope_from: str
    message_id: str
    raw: bytes
    #: whom the reply history counts this reply against (the participant, also in shadow mode)
    history_as: str | None = None


#: what is left of a sent message's body in the outbox once purged: an empty blob (the column is NOT NULL)
PURGED = "x''"


#: the shortest text a card number can be (13 digits): a shorter string is returned without a scan
_CARD_MIN_CHARS = 13


def _masked(value):
    """Card numbers masked in every string of ``value`` (a str, or JSON-like lists and dicts).

    Called on every string of every verdict (dozens a message: rule ids, categories, tags, most
    of them short), so a string too short to hold a card number is returned without a scan."""
    if isinstance(value, str):
        return mask_card_numbers(value) if len(value) >= _CARD_MIN_CHARS else value
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def _masked_json(value) -> str:
    """``json.dumps(_masked(value))``, in one scan when nothing is to be masked.

    A card number in a string of ``value`` stands in the JSON text as it is (digits, spaces and
    hyphens are never escaped, and the quotes around a string are not digits), unless a ``\\u``
    escape (a control character) puts digits right before it; so a text with neither is the
    answer, and only one with a candidate or an escape is walked string by string."""
    text = json.dumps(value, ensure_ascii=False)
    if "\\u" not in text and not find_card_numbers(text):
        return text
    return json.dumps(_masked(value), ensure_ascii=False)


#: the note on an outbox row that was at its commit point when guard stopped (see the module doc)
UNCONFIRMED = "unconfirmed: guard stopped after handing the message to the SMTP server, before its answer"


def _recovery(path: str, problem: str) -> str:
    return (f"{path}: the journal is damaged ({problem}); guard does not start with it, because it would "
            "answer old mail again and could send a reply twice. To recover: stop guard; move the file "
            f"(and {path}-wal, {path}-shm if present) aside; restore the latest backup of the journal, or "
            f"try `sqlite3 {path} .recover | sqlite3 new.sqlite3` and put new.sqlite3 in its place; or, "
            "knowing that mail already handled may be handled again, start with a new journal: "
            "`guard run --new-journal` (or daemon.allow_new_journal = true)")


class Journal:
    def __init__(self, path: Path | str, *, check: bool = True) -> None:
        from guard.errors import ConfigError

        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open the journal: {exc}") from None
        self.db.row_factory = sqlite3.Row
        self._window = _ReplyWindow(self.db)
        #: mailbox_state's answers (the row changes only through note_uidvalidity), with the
        #: PRAGMA data_version they were read at (another connection's commit changes it)
        self._mailbox_states: dict[tuple[str, str], MailboxState] = {}
        self._mailbox_version = None
        #: PRAGMA wal_autocheckpoint as opened (mark_sending turns it off for its commit and back on)
        self._autocheckpoint: int | None = None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed "sent" survives a power cut, not only a crash of guard
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            if check and self.path != ":memory:":
                # a truncated or overwritten file: refuse it before anything is read or written
                found = [r[0] for r in self.db.execute("PRAGMA quick_check(5)")]
                if found != ["ok"]:
                    raise sqlite3.DatabaseError("; ".join(found)[:300])
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ConfigError(_recovery(self.path, str(exc))) from None

    # -- housekeeping ------------------------------------------------------------------
    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        if current > len(MIGRATIONS):
            from guard.errors import ConfigError

            raise ConfigError(f"{self.path}: journal schema version {current} is newer than this guard "
                              f"({len(MIGRATIONS)}); upgrade guard")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with self._tx():
                for stmt in MIGRATIONS[version - 1].split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        return self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]

    def _tx(self):
        return _Transaction(self.db, self._rolled_back)

    def _rolled_back(self) -> None:
        """What is kept in memory of the journal's rows may be void after a rollback: dropped."""
        self._window.invalidate()
        self._mailbox_states.clear()

    def transaction(self):
        """One transaction around several journal calls (one commit, one fsync): a batch of
        messages. The journal's own methods nest inside it as savepoints."""
        return _Transaction(self.db, self._rolled_back)

    def close(self) -> None:
        self.db.close()

    # -- mailboxes ---------------------------------------------------------------------
    def mailbox_state(self, account: str, mailbox: str, now: datetime) -> MailboxState:
        """The mailbox's state; the first call for a mailbox records ``now`` as its first start.

        Asked for every decision (the reply gate's backlog rule): the answer is kept until
        :meth:`note_uidvalidity` changes the row, a rollback, or another connection's commit."""
        key = (account, mailbox)
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._mailbox_version:
            self._mailbox_states.clear()
            self._mailbox_version = version
        state = self._mailbox_states.get(key)
        if state is not None:
            return state
        with self._tx():
            self.db.execute("INSERT OR IGNORE INTO mailboxes (account, mailbox, first_start) VALUES (?, ?, ?)",
                            (account, mailbox, _ts(now)))
            r = self.db.execute("SELECT * FROM mailboxes WHERE account=? AND mailbox=?", (account, mailbox)).fetchone()
        state = self._mailbox_states[key] = MailboxState(r["uidvalidity"], _dt(r["first_start"]),
                                                         _dt(r["uidvalidity_reset"]))
        return state

    def note_uidvalidity(self, account: str, mailbox: str, uidvalidity: int, now: datetime) -> bool:
        """Record the mailbox's UIDVALIDITY; True when it changed (cached UIDs are void)."""
        state = self.mailbox_state(account, mailbox, now)
        if state.uidvalidity == uidvalidity:
            return False
        self._mailbox_states.pop((account, mailbox), None)
        with self._tx():
            reset = _ts(now) if state.uidvalidity is not None else None
            self.db.execute("UPDATE mailboxes SET uidvalidity=?, uidvalidity_reset=COALESCE(?, uidvalidity_reset) "
                            "WHERE account=? AND mailbox=?", (uidvalidity, reset, account, mailbox))
        return state.uidvalidity is not None

    # -- the ledger --------------------------------------------------------------------
    def _row(self, r: sqlite3.Row | None) -> Row | None:
        if r is None:
            return None
        return Row(
            id=r["id"], key=Key(r["account"], r["mailbox"], r["uidvalidity"], r["uid"]), message_id=r["message_id"],
            state=r["state"], attempts=r["attempts"], arrived=_dt(r["arrived"]), category=r["category"],
            folder=r["folder"], flag=bool(r["flag"]), note=r["note"], error=r["error"],
            plan=json.loads(r["plan"]) if r["plan"] else None,
            suppressed=json.loads(r["suppressed"]) if r["suppressed"] else None, content=r["content"],
        )

    def get(self, key: Key) -> Row | None:
        return self._row(self.db.execute(
            "SELECT * FROM messages WHERE account=? AND mailbox=? AND uidvalidity=? AND uid=?",
            (key.account, key.mailbox, key.uidvalidity, key.uid)).fetchone())

    def by_id(self, row_id: int) -> Row:
        return self._row(self.db.execute("SELECT * FROM messages WHERE id=?", (row_id,)).fetchone())

    def known_uids(self, account: str, mailbox: str, uidvalidity: int) -> set[int]:
        return {r[0] for r in self.db.execute(
            "SELECT uid FROM messages WHERE account=? AND mailbox=? AND uidvalidity=?", (account, mailbox, uidvalidity))}

    def max_uid(self, account: str, mailbox: str, uidvalidity: int) -> int:
        r = self.db.execute("SELECT MAX(uid) FROM messages WHERE account=? AND mailbox=? AND uidvalidity=?",
                            (account, mailbox, uidvalidity)).fetchone()
        return r[0] or 0

    def by_message_id(self, account: str, message_id: str, *, exclude: Key | None = None) -> Row | None:
        """The latest other row with this Message-ID."""
        for r in self.db.execute("SELECT * FROM messages WHERE account=? AND message_id=? ORDER BY id DESC",
                                 (account, message_id)):
            row = self._row(r)
            if exclude is None or row.key != exclude:
                return row
        return None

    def is_empty(self) -> bool:
        """No mailbox and no message recorded yet: a journal just created."""
        return (self.db.execute("SELECT COUNT(*) FROM mailboxes").fetchone()[0] == 0
                and self.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0)

    def set_identity(self, row_id: int, *, message_id: str | None, content: str | None) -> None:
        """The Message-ID and content digest of a row, known once the message is read."""
        with self._tx():
            self.db.execute("UPDATE messages SET message_id=COALESCE(?, message_id), content=? WHERE id=?",
                            (message_id, content, row_id))

    def discard(self, row_id: int) -> None:
        """Delete a ``new`` row that has nothing attached (before adopting another row for its UID)."""
        with self._tx():
            self.db.execute("DELETE FROM message_facts WHERE message=?", (row_id,))
            self.db.execute("DELETE FROM messages WHERE id=? AND state='new'", (row_id,))

    def begin(self, key: Key, *, message_id: str | None, arrived: datetime | None, now: datetime) -> Row:
        """Start (or restart) processing a message: creates the row or counts one more attempt."""
        with self._tx():
            self.db.execute(
                "INSERT INTO messages (account, mailbox, uidvalidity, uid, message_id, state, attempts, arrived, "
                "created, updated) VALUES (?, ?, ?, ?, ?, 'new', 0, ?, ?, ?) "
                "ON CONFLICT (account, mailbox, uidvalidity, uid) DO NOTHING",
                (key.account, key.mailbox, key.uidvalidity, key.uid, message_id,
                 _ts(arrived) if arrived else None, _ts(now), _ts(now)))
            self.db.execute(
                "UPDATE messages SET attempts = attempts + 1, updated=? WHERE account=? AND mailbox=? AND "
                "uidvalidity=? AND uid=? AND state='new'",
                (_ts(now), key.account, key.mailbox, key.uidvalidity, key.uid))
        return self.get(key)

    def record_decision(self, row_id: int, *, category: str, verdict: dict, plan: list[str], folder: str | None,
                        flag: bool, suppressed: list, outgoing: Iterable[Outgoing], mode: str, now: datetime,
                        note: str | None = None) -> None:
        """The decision and every send it implies (the intents), in one transaction."""
        with self._tx():
            self.db.execute(
                "UPDATE messages SET state='decided', category=?, verdict=?, plan=?, folder=?, flag=?, suppressed=?, "
                "mode=?, note=?, error=NULL, updated=? WHERE id=? AND state='new'",
                (category, _masked_json(verdict), json.dumps(plan), folder, int(flag), _masked_json(suppressed), mode,
                 _masked(note), _ts(now), row_id))
            for seq, o in enumerate(outgoing):
                cur = self.db.execute(
                    "INSERT INTO outbox (message, seq, kind, template, recipient, envelope_from, message_id, raw, "
                    "state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'intent', ?)",
                    (row_id, seq, o.kind, o.template, o.recipient, o.envelope_from, o.message_id, o.raw, _ts(now)))
                if o.kind == "reply" or o.template in ("breaker_alert", LOOP_ALERT):
                    self.db.execute("INSERT INTO replies (recipient, template, at, outbox) VALUES (?, ?, ?, ?)",
                                    ((o.history_as or o.recipient).lower(), o.template, _ts(now), cur.lastrowid))
                if o.kind in ("forward", "alert") and o.history_as and o.history_as.lower() != o.recipient.lower():
                    # counted against the sender it is about (the per-sender limit of forwards and alerts)
                    self.db.execute("INSERT INTO replies (recipient, template, at, outbox) VALUES (?, ?, ?, ?)",
                                    (o.history_as.lower(), TO_COORDINATOR, _ts(now), cur.lastrowid))

    def record_error(self, row_id: int, error: str, now: datetime) -> None:
        with self._tx():
            self.db.execute("UPDATE messages SET error=?, updated=? WHERE id=?",
                            (_masked(error)[:500], _ts(now), row_id))

    def mark_poison(self, row_id: int, note: str, folder: str | None, now: datetime) -> None:
        with self._tx():
            self.db.execute("UPDATE messages SET state='poison', note=?, folder=?, flag=1, updated=? WHERE id=?",
                            (_masked(note)[:500], folder, _ts(now), row_id))
            self._queue_for_digest(row_id, now)

    def mark_done(self, row_id: int, now: datetime, *, folder: str | None = None, note: str | None = None) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE messages SET state='done', folder=COALESCE(?, folder), note=COALESCE(?, note), updated=? "
                "WHERE id=?", (folder, note, _ts(now), row_id))
            self._queue_for_digest(row_id, now)

    def _queue_for_digest(self, row_id: int, now: datetime) -> None:
        """A decided or poison message enters the digest queue once (see guard.digest.records)."""
        self.db.execute("INSERT OR IGNORE INTO digest_queue (message, kind, at) SELECT id, 'final', ? FROM messages "
                        "WHERE id=? AND (verdict IS NOT NULL OR state='poison')", (_ts(now), row_id))

    def record_skip(self, key: Key, *, message_id: str | None, arrived: datetime | None, note: str,
                    now: datetime) -> None:
        """A message not acted on (a duplicate by Message-ID): done, with the reason."""
        with self._tx():
            self.db.execute(
                "INSERT INTO messages (account, mailbox, uidvalidity, uid, message_id, state, attempts, arrived, "
                "note, created, updated) VALUES (?, ?, ?, ?, ?, 'done', 0, ?, ?, ?, ?) "
                "ON CONFLICT (account, mailbox, uidvalidity, uid) DO UPDATE SET state='done', note=excluded.note, "
                "updated=excluded.updated",
                (key.account, key.mailbox, key.uidvalidity, key.uid, message_id, _ts(arrived) if arrived else None,
                 _masked(note), _ts(now), _ts(now)))

    def adopt(self, row_id: int, key: Key, now: datetime) -> None:
        """Point an unfinished row at the message's new UID after a UIDVALIDITY change."""
        with self._tx():
            self.db.execute("UPDATE messages SET uidvalidity=?, uid=?, updated=? WHERE id=?",
                            (key.uidvalidity, key.uid, _ts(now), row_id))

    def unfinished(self, account: str, mailbox: str) -> list[Row]:
        """Rows decided but not done (sends pending or the move not done), oldest first."""
        return [self._row(r) for r in self.db.execute(
            "SELECT * FROM messages WHERE account=? AND mailbox=? AND state='decided' ORDER BY id",
            (account, mailbox))]

    # -- the outbox --------------------------------------------------------------------
    def _outbox(self, r: sqlite3.Row) -> OutboxRow:
        return OutboxRow(r["id"], r["message"], r["seq"], r["kind"], r["template"], r["recipient"],
                         r["envelope_from"], r["message_id"], bytes(r["raw"]), r["state"], r["attempts"],
                         _dt(r["next_attempt"]), r["last_error"])

    def outbox(self, row_id: int) -> list[OutboxRow]:
        return [self._outbox(r) for r in self.db.execute("SELECT * FROM outbox WHERE message=? ORDER BY seq", (row_id,))]

    def mark_sending(self, outbox_id: int, now: datetime) -> None:
        """The commit point: the message is about to be handed to the SMTP server (see the module doc).

        Committed without an fsync and without a WAL checkpoint (synchronous=NORMAL and no
        autocheckpoint, for this one transaction): it is durable against a crash of guard at once,
        and the window between this commit and the hand-over shrinks from an fsync (~0.15 ms on
        ext4 here; a checkpoint, ~2 ms) to microseconds. A power cut may lose it: the send is then
        an intent again and goes out once more (the only way left to a duplicate)."""
        relax = not self.db.in_transaction
        if relax:
            if self._autocheckpoint is None:
                self._autocheckpoint = self.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            checkpoint = self._autocheckpoint
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA wal_autocheckpoint=0")
        try:
            with self._tx():
                self.db.execute("UPDATE outbox SET state='sending' WHERE id=?", (outbox_id,))
        finally:
            if relax:
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint)}")

    def mark_unconfirmed(self, outbox_id: int, now: datetime, *, purge: bool = False) -> None:
        """A ``sending`` row found after a crash: taken as sent, never sent twice (see the module doc).
        ``purge``: its body is dropped at once (see :meth:`mark_sent`)."""
        with self._tx():
            self.db.execute("UPDATE outbox SET state='sent', sent=?, last_error=? WHERE id=? AND state='sending'",
                            (_ts(now), UNCONFIRMED, outbox_id))
            if purge:
                self.db.execute(f"UPDATE outbox SET raw={PURGED} WHERE id=? AND state='sent'", (outbox_id,))

    def mark_sent(self, outbox_id: int, now: datetime, *, purge: bool = False, sync: bool = True) -> None:
        """``purge``: the body is dropped in the same commit (a forward carries the whole original
        message, card numbers and all; once the server has it, guard needs only the row).

        ``sync=False``: committed without an fsync (synchronous=NORMAL, as the commit point): durable
        against a crash of guard at once (a WAL commit), against a power cut from the next fsynced
        commit on, which the executor makes right after the sends of a batch (the batch's "done",
        a retry or a failure) or by :meth:`sync`. A backlog's sends then cost no fsync each."""
        raw = f", raw={PURGED}" if purge else ""
        relax = not sync and not self.db.in_transaction
        if relax:
            self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._tx():
                self.db.execute(f"UPDATE outbox SET state='sent', sent=?, last_error=NULL, attempts=attempts+1{raw} "
                                "WHERE id=?", (_ts(now), outbox_id))
        finally:
            if relax:
                self.db.execute("PRAGMA synchronous=FULL")

    def sync(self) -> None:
        """fsync the write-ahead log: every commit made so far (those of ``sync=False`` too)
        survives a power cut (what a synchronous=FULL commit does for itself)."""
        if self.path == ":memory:":
            return
        try:
            fd = os.open(self.path + "-wal", os.O_RDONLY)
        except FileNotFoundError:  # checkpointed and removed: everything is in the database file
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def purge_sent_outbox(self, before: datetime) -> int:
        """Drop the bodies of mail sent before ``before`` (daemon.outbox_retention_days); returns how many."""
        with self._tx():
            return self.db.execute(f"UPDATE outbox SET raw={PURGED} WHERE state='sent' AND sent < ? "
                                   f"AND length(raw) > 0", (_ts(before),)).rowcount

    def mark_retry(self, outbox_id: int, error: str, next_attempt: datetime) -> None:
        with self._tx():
            self.db.execute("UPDATE outbox SET state='intent', last_error=?, next_attempt=?, attempts=attempts+1 "
                            "WHERE id=?",
                            (error[:500], _ts(next_attempt), outbox_id))

    def mark_failed(self, outbox_id: int, error: str) -> None:
        with self._tx():
            self.db.execute("UPDATE outbox SET state='failed', last_error=?, attempts=attempts+1 WHERE id=?",
                            (error[:500], outbox_id))
            # a reply that never went out does not count against the window or the breaker
            self.db.execute("DELETE FROM replies WHERE outbox=?", (outbox_id,))
            self._window.invalidate()

    def next_retry(self) -> datetime | None:
        r = self.db.execute("SELECT MIN(next_attempt) FROM outbox WHERE state IN ('intent', 'sending')").fetchone()
        return _dt(r[0]) if r[0] is not None else None

    # -- reply history (the reply gate's snapshot) ---------------------------------------
    def last_reply(self, recipient: str, template: str) -> datetime | None:
        r = self.db.execute("SELECT MAX(at) FROM replies WHERE recipient=? AND template=?",
                            (recipient.lower(), template)).fetchone()
        return _dt(r[0])

    def replies_since(self, since: datetime, template: str | None = None) -> int:
        """Automatic replies (``template=None``: every template but alerts and coordinator
        history) or entries of ``template`` since ``since``. Counted in memory (:class:`_ReplyWindow`):
        asked twice per message, a COUNT over the last hour grew with a backlog's size."""
        n = self._window.count(_ts(since), _AUTOMATIC if template is None else template)
        if n is not None:
            return n
        if template is None:
            q = ("SELECT COUNT(*) FROM replies WHERE at >= ? AND template NOT IN (?, ?, ?)")
            return self.db.execute(q, (_ts(since), "breaker_alert", LOOP_ALERT, TO_COORDINATOR)).fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM replies WHERE at >= ? AND template = ?",
                               (_ts(since), template)).fetchone()[0]

    def sends_about(self, recipient: str, template: str, since: datetime) -> int:
        """How many history entries ``template`` for ``recipient`` (normalised) since ``since``."""
        return self.db.execute("SELECT COUNT(*) FROM replies WHERE recipient=? AND template=? AND at >= ?",
                               (recipient.lower(), template, _ts(since))).fetchone()[0]

    def replies_to_domain(self, domain: str, since: datetime) -> int:
        """Automatic replies since ``since`` to addresses at ``domain`` (the domain's rate limit)."""
        if not domain:
            return 0
        if "@" not in domain:
            n = self._window.count(_ts(since), _AUTOMATIC, domain.lower())
            if n is not None:
                return n
        pattern = "%@" + domain.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = ("SELECT COUNT(*) FROM replies WHERE at >= ? AND recipient LIKE ? ESCAPE '\\' "
             "AND template NOT IN (?, ?, ?)")
        return self.db.execute(q, (_ts(since), pattern, "breaker_alert", LOOP_ALERT, TO_COORDINATOR)).fetchone()[0]

    # -- reporting ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {f"messages.{r[0]}": r[1] for r in self.db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state")}
        out.update({f"outbox.{r[0]}": r[1] for r in self.db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")})
        return out


#: ``_ReplyWindow`` key of the automatic replies (every template but these three)
_AUTOMATIC = ""
_NOT_AUTOMATIC = frozenset(("breaker_alert", LOOP_ALERT, TO_COORDINATOR))


class _ReplyWindow:
    """The recent rows of ``replies`` in memory, so that the breaker's counts cost O(log n).

    Holds sorted ``at`` lists per key: every automatic reply (``_AUTOMATIC``), each template,
    and automatic replies per recipient domain. New rows are read by id (``id > last``, the
    primary key), so a query costs the rows added since the previous one. The mirror is exact
    for ``since >= floor`` (every row at or after ``floor`` is held); an older ``since`` answers
    None (the caller counts in SQL). It is dropped and reloaded when rows may have gone: a
    delete, a rollback, or a commit by another connection (``PRAGMA data_version``). Entries
    more than two hours below the newest ``since`` asked are pruned, so memory stays bounded.
    """

    KEEP = 3600.0

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.invalidate()

    def invalidate(self) -> None:
        self.loaded = False
        self.lists: dict[tuple[str, str], list[float]] = {}
        self.last_id = 0
        self.floor = float("inf")
        self.version = None

    def _add(self, rid: int, recipient: str, template: str, at: float) -> None:
        keys = [("t", template)]
        if template not in _NOT_AUTOMATIC:
            keys += [("t", _AUTOMATIC), ("d", recipient.rpartition("@")[2])]
        for key in keys:
            lst = self.lists.setdefault(key, [])
            if not lst or at >= lst[-1]:
                lst.append(at)
            else:
                bisect.insort(lst, at)
        self.last_id = max(self.last_id, rid)

    def count(self, since: float, template: str, domain: str | None = None) -> int | None:
        try:
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
            if self.loaded and version != self.version:
                self.invalidate()
            if not self.loaded:
                floor = since - self.KEEP
                rows = self.db.execute("SELECT id, recipient, template, at FROM replies WHERE at >= ?", (floor,))
                for r in rows:
                    self._add(r[0], r[1], r[2], r[3])
                self.last_id = max(self.last_id, self.db.execute("SELECT COALESCE(MAX(id), 0) FROM replies")
                                   .fetchone()[0])
                self.loaded, self.floor, self.version = True, floor, version
            else:
                for r in self.db.execute("SELECT id, recipient, template, at FROM replies WHERE id > ? ORDER BY id",
                                         (self.last_id,)):
                    self._add(r[0], r[1], r[2], r[3])
        except sqlite3.Error:
            self.invalidate()
            return None
        if since < self.floor:
            return None
        if since - self.floor > 2 * self.KEEP:  # prune: keep an hour below the newest since
            self.floor = since - self.KEEP
            for key, lst in self.lists.items():
                del lst[:bisect.bisect_left(lst, self.floor)]
        lst = self.lists.get(("d", domain) if domain is not None else ("t", template))
        return len(lst) - bisect.bisect_left(lst, since) if lst else 0


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error); inside an open transaction, a savepoint."""

    def __init__(self, db: sqlite3.Connection, on_rollback=None) -> None:
        self.db = db
        self.nested = False
        self.on_rollback = on_rollback

    def __enter__(self):
        self.nested = self.db.in_transaction
        self.db.execute("SAVEPOINT inner" if self.nested else "BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if self.nested:
            if exc_type is not None:
                self.db.execute("ROLLBACK TO inner")
                self._rolled_back()
            self.db.execute("RELEASE inner")
        elif exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
            self._rolled_back()
        return False

    def _rolled_back(self) -> None:
        if self.on_rollback is not None:
            self.on_rollback()
