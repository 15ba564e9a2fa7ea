"""The journal's tables for the digest and the coordinator's corrections (schema migration 2).

* ``message_facts``: what the digest shows of a message besides the decision --
  sender, subject, date and a campaign fingerprint (MinHash of the normalised
  text, :mod:`guard.digest.campaigns`), computed when the message is decided. Never
  the body.
* ``digest_queue``: one row per message that reached a final state (done or
  poison; written by :meth:`Journal.mark_done` / ``mark_poison``) and per
  correction. Its ids only grow.
* ``digests``: each digest as rendered bytes, ``intent`` then ``sent``. The
  **watermark** is the largest ``upto`` (queue id) of a digest journalled as
  sent: the next digest covers the queue rows above it. A digest left as
  ``intent`` by a crash is sent again with the same bytes and Message-ID before
  a new one is built, so across restarts nothing is reported twice (the
  watermark moves only in the transaction that records "sent") and nothing is
  skipped (every queue row above the watermark is covered).
* ``sender_lists``: the allow- and denylist entries learnt from corrections.
* ``labels``: each correction seen (the labelled copy is a file, see
  :mod:`guard.learning.corrections`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from guard.digest import campaigns
from guard.digest.build import Record, Send
from guard.daemon.journal import UNCONFIRMED, Journal
from guard.mail.textutil import mask_card_numbers

LISTS = ("allowlist", "denylist")
#: the fingerprint reads the start of the text only (a campaign shows in its first pages; bounded time)
FINGERPRINT_CHARS = 20_000


def _ts(t: datetime | None) -> float | None:
    return None if t is None else t.timestamp()


def _dt(x: float | None) -> datetime | None:
    return None if x is None else datetime.fromtimestamp(x, timezone.utc)


def _addr(a) -> str:
    return (a.addr or "").lower() if a is not None else ""


def facts_of(msg) -> dict:
    """Sender, subject, date and fingerprint of a parsed message (a report: of its forwarded message)."""
    inner = msg.forwarded[0] if msg.forwarded else None
    src = inner if inner is not None else msg
    return {  # card numbers masked before anything is stored
        "sender": _addr(msg.from_), "subject": mask_card_numbers(msg.subject or "")[:300],
        "date": _ts(msg.date) if msg.date and msg.date.tzinfo else None,
        "inner_sender": _addr(inner.from_) if inner is not None else "",
        "inner_subject": mask_card_numbers(inner.subject or "")[:300] if inner is not None else "",
        "fingerprint": campaigns.fingerprint(src.subject, src.text[:FINGERPRINT_CHARS]),
    }


def record_facts(journal: Journal, row_id: int, msg) -> None:
    store_facts(journal, row_id, facts_of(msg))


def store_facts(journal: Journal, row_id: int, f: dict) -> None:
    """The facts of :func:`facts_of` (computed where the message was read: the daemon's analyser)."""
    with journal._tx():
        journal.db.execute(
            "INSERT OR REPLACE INTO message_facts (message, sender, subject, date, inner_sender, inner_subject, "
            "fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row_id, f["sender"], f["subject"], f["date"], f["inner_sender"], f["inner_subject"], f["fingerprint"]))


def queue_correction(journal: Journal, row_id: int, kind: str, now: datetime) -> None:
    with journal._tx():
        journal.db.execute("INSERT OR IGNORE INTO digest_queue (message, kind, at) VALUES (?, ?, ?)",
                           (row_id, kind, _ts(now)))


# -- the digest's records and watermark ----------------------------------------------------------


def watermark(journal: Journal) -> int:
    r = journal.db.execute("SELECT MAX(upto) FROM digests WHERE state='sent'").fetchone()
    return r[0] or 0


def last_sent(journal: Journal) -> datetime | None:
    return _dt(journal.db.execute("SELECT MAX(sent) FROM digests WHERE state='sent'").fetchone()[0])


def queue_top(journal: Journal) -> int:
    return journal.db.execute("SELECT MAX(id) FROM digest_queue").fetchone()[0] or 0


def state_get(journal: Journal, key: str) -> str | None:
    r = journal.db.execute("SELECT value FROM guard_state WHERE key=?", (key,)).fetchone()
    return r[0] if r else None


def state_setdefault(journal: Journal, key: str, value: str) -> str:
    found = state_get(journal, key)
    if found is not None:
        return found
    with journal._tx():
        journal.db.execute("INSERT OR IGNORE INTO guard_state (key, value) VALUES (?, ?)", (key, value))
    return state_get(journal, key)


#: the reason kinds that explain each verdict (a scam's "asks a question" explains nothing)
EXPLAINS = {"scam": ("scam",), "suspicious": ("scam",), "report": ("report", "paid"), "inquiry": ("inquiry",),
            "automated": ("automated",)}


def explaining_reasons(verdict: dict) -> tuple[str, ...]:
    """The descriptions of the verdict's positive reasons that explain its category, heaviest first.
    Reasons journalled without their kinds (before tags were recorded) are all kept."""
    kinds = EXPLAINS.get(verdict.get("category") or "", ())
    out = []
    for r in verdict.get("reasons", []):
        if r.get("score", 0) <= 0:
            continue
        tags = r.get("tags")
        if tags is not None and kinds and not set(tags) & set(kinds):
            continue
        out.append(r["description"])
    return tuple(dict.fromkeys(out))


def records(journal: Journal, after: int, upto: int) -> list[Record]:
    """The digest records of queue rows ``after < id <= upto`` (final decisions and corrections)."""
    out = []
    for q in journal.db.execute(
            "SELECT q.id AS qid, q.kind, m.*, f.sender AS f_sender, f.subject AS f_subject, f.date AS f_date, "
            "f.inner_sender, f.inner_subject, f.fingerprint FROM digest_queue q JOIN messages m ON m.id = q.message "
            "LEFT JOIN message_facts f ON f.message = m.id WHERE q.id > ? AND q.id <= ? ORDER BY q.id",
            (after, upto)).fetchall():
        verdict = json.loads(q["verdict"]) if q["verdict"] else {}
        inner = verdict.get("inner") or {}
        reasons = explaining_reasons(verdict)
        reply_language = verdict.get("reply_language") or None
        sends = tuple(Send(o["kind"], o["template"], o["state"], o["last_error"]) for o in journal.db.execute(
            "SELECT kind, template, state, last_error FROM outbox WHERE message=? ORDER BY seq", (q["id"],)))
        suppressed = tuple((a, tuple(r)) for a, r in json.loads(q["suppressed"] or "[]"))
        date = _dt(q["arrived"]) or _dt(q["f_date"])
        out.append(Record(
            ref=q["message_id"] or f"{q['mailbox']};UID={q['uid']}",
            sender=q["f_sender"] or "", subject=q["f_subject"] or "", date=date,
            category=verdict.get("category"), score=verdict.get("score"), reasons=reasons,
            folder=q["folder"], state=q["state"], fingerprint=q["fingerprint"] or "",
            paid=bool(verdict.get("paid")), inner_category=inner.get("category"),
            inner_sender=q["inner_sender"] or "", inner_subject=q["inner_subject"] or "",
            sends=() if q["kind"] != "final" else sends, suppressed=() if q["kind"] != "final" else suppressed,
            note=q["note"], correction=None if q["kind"] == "final" else q["kind"],
            reply_language=reply_language,
        ))
    return out


@dataclass(frozen=True)
class DigestRow:
    id: int
    upto: int
    period_start: datetime | None
    period_end: datetime
    recipient: str
    envelope_from: str
    message_id: str
    raw: bytes
    state: str


def _digest_row(r) -> DigestRow:
    return DigestRow(r["id"], r["upto"], _dt(r["period_start"]), _dt(r["period_end"]), r["recipient"],
                     r["envelope_from"], r["message_id"], bytes(r["raw"]), r["state"])


def pending_digest(journal: Journal) -> DigestRow | None:
    r = journal.db.execute("SELECT * FROM digests WHERE state='intent' ORDER BY id LIMIT 1").fetchone()
    return _digest_row(r) if r else None


def digest_intent(journal: Journal, *, upto: int, period_start: datetime | None, period_end: datetime,
                  recipient: str, envelope_from: str, message_id: str, raw: bytes, now: datetime) -> DigestRow:
    with journal._tx():
        cur = journal.db.execute(
            "INSERT INTO digests (upto, period_start, period_end, recipient, envelope_from, message_id, raw, state, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, 'intent', ?)",
            (upto, _ts(period_start), _ts(period_end), recipient, envelope_from, message_id, raw, _ts(now)))
    return _digest_row(journal.db.execute("SELECT * FROM digests WHERE id=?", (cur.lastrowid,)).fetchone())


def digest_sent(journal: Journal, digest_id: int, now: datetime) -> None:
    """Journal the digest as sent: this is what advances the watermark."""
    with journal._tx():
        journal.db.execute("UPDATE digests SET state='sent', sent=?, last_error=NULL WHERE id=?", (_ts(now), digest_id))


def digest_sending(journal: Journal, digest_id: int, now: datetime) -> None:
    """The digest's commit point: about to be handed to the SMTP server (see guard.daemon.journal)."""
    with journal._tx():
        journal.db.execute("UPDATE digests SET handed_over=? WHERE id=?", (_ts(now), digest_id))


def settle_unconfirmed(journal: Journal, now: datetime) -> int:
    """Digests a crash left at their commit point: taken as sent, never sent twice. Returns how many."""
    with journal._tx():
        cur = journal.db.execute("UPDATE digests SET state='sent', sent=?, last_error=? "
                                 "WHERE state='intent' AND handed_over IS NOT NULL", (_ts(now), UNCONFIRMED))
    return cur.rowcount


def digest_error(journal: Journal, digest_id: int, error: str) -> None:
    """Not sent (an SMTP error, or the connection lost after the hand-over): retried later."""
    with journal._tx():
        journal.db.execute("UPDATE digests SET handed_over=NULL, attempts=attempts+1, last_error=? WHERE id=?",
                           (error[:500], digest_id))


# -- allow- and denylist -----------------------------------------------------------------------


def add_to_list(journal: Journal, name: str, entry: str, now: datetime, source: str = "") -> bool:
    """Add an entry (an address or a domain, lower-cased); True when it was new. An entry moves
    between the lists: allowlisting removes it from the denylist and the other way round."""
    if name not in LISTS:
        raise ValueError(name)
    entry = entry.strip().lower()
    other = LISTS[1 - LISTS.index(name)]
    with journal._tx():
        journal.db.execute("DELETE FROM sender_lists WHERE list=? AND entry=?", (other, entry))
        cur = journal.db.execute("INSERT OR IGNORE INTO sender_lists (list, entry, added, source) VALUES (?, ?, ?, ?)",
                                 (name, entry, _ts(now), source[:300]))
    return cur.rowcount > 0


def list_entries(journal: Journal, name: str) -> frozenset[str]:
    return frozenset(r[0] for r in journal.db.execute("SELECT entry FROM sender_lists WHERE list=?", (name,)))


def lists_version(journal: Journal) -> tuple:
    """Changes whenever an entry is added or removed (for the classifier's cache)."""
    return tuple(journal.db.execute("SELECT COUNT(*), COALESCE(MAX(added), 0), COALESCE(SUM(length(entry)), 0), "
                                    "COALESCE(SUM(list = 'allowlist'), 0) FROM sender_lists").fetchone())


# -- labels --------------------------------------------------------------------------------------


def label_seen(journal: Journal, account: str, folder: str, uidvalidity: int, uid: int) -> str | None:
    r = journal.db.execute("SELECT state FROM labels WHERE account=? AND folder=? AND uidvalidity=? AND uid=?",
                           (account, folder, uidvalidity, uid)).fetchone()
    return r[0] if r else None


def record_label(journal: Journal, *, account: str, folder: str, uidvalidity: int, uid: int, message_id: str | None,
                 sender: str, label: str, entry: str | None, path: str | None, message: int | None, state: str,
                 now: datetime) -> None:
    with journal._tx():
        journal.db.execute(
            "INSERT INTO labels (account, folder, uidvalidity, uid, message_id, sender, label, entry, path, message, "
            "state, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, folder, uidvalidity, uid) "
            "DO UPDATE SET state=excluded.state, message=COALESCE(excluded.message, message), at=excluded.at",
            (account, folder, uidvalidity, uid, message_id, sender, label, entry, path, message, state, _ts(now)))


def labels(journal: Journal) -> list[dict]:
    return [dict(r) for r in journal.db.execute("SELECT * FROM labels ORDER BY id")]
