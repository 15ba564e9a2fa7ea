"""Carrying out decisions, crash-safely: journal the intent, send, journal "sent", move, journal "done".

The executor is the only place (with the daemon) that touches the mailbox, the
mailer and the journal. For each message:

1. skip it if the ledger has it as done; resume it if it was decided;
2. fetch it, parse and classify it, pick the plan, gate and render the sends
   (pure: :mod:`guard.respond.prepare`);
3. journal the decision and every send as an *intent*, in one transaction;
4. send each intent (``sending`` -> ``sent``); a temporary failure is retried
   later with exponential backoff and the message waits in the inbox; a
   permanent one is journalled and logged (a failed forward or alert sends
   the message to Review, flagged, so the coordinator still finds it);
5. flag and move the message, then journal it as done.

A crash at any point resumes at the right step: a ``sent`` send is never sent
again, an intent is never lost. A message whose processing fails
``max_attempts`` times (or that keeps crashing guard) is *poison*: it goes to
Review, flagged, and nobody is answered from the error path.

Logging: the ``guard.decision`` logger gets one line per message with
identifiers and decisions only (UID, Message-ID, category, actions, reasons);
never bodies, addresses, card numbers or credentials.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Callable

from guard.classification.classify import Classifier
from guard.digest.records import record_facts
from guard.errors import PermanentIOError, TransientIOError
from guard.daemon.journal import Journal, Key, Outgoing, Row
from guard.daemon.mailbox import Fetched, Mailbox
from guard.daemon.mailer import Mailer
from guard.mail.message import ParsedMessage, parse
from guard.respond.prepare import Env, prepare, reply_recipient
from guard.respond.policy import Policy, decide
from guard.respond.reply_gate import ReplyHistory

log = logging.getLogger("guard.daemon.executor")
decision_log = logging.getLogger("guard.decision")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class RetryPolicy:
    initial: float = 30.0
    cap: float = 3600.0
    max_attempts: int = 20

    def delay(self, attempt: int, rnd: float) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random."""
        base = min(self.cap, self.initial * (2 ** max(0, attempt - 1)))
        return base / 2 + base / 2 * rnd


@dataclass
class Outcome:
    """What happened to one message (for the demo's table and for tests)."""

    uid: int
    message_id: str | None
    category: str | None = None
    row: str | None = None
    sent: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    folder: str | None = None
    state: str = "done"
    note: str | None = None
    subject: str = ""


class Executor:
    def __init__(self, *, journal: Journal, mailbox: Mailbox, mailer: Mailer, classifier: Classifier, policy: Policy,
                 env: Env, max_attempts: int = 3, retry: RetryPolicy = RetryPolicy(), clock: Clock = utc_now,
                 rng: Callable[[], float] = random.random, stop: asyncio.Event | None = None,
                 batch_size: int = 50, batch_bytes: int = 16_000_000) -> None:
        self.journal = journal
        self.mailbox = mailbox
        self.mailer = mailer
        self.classifier = classifier
        self.policy = policy
        self.env = env
        self.max_attempts = max_attempts
        self.retry = retry
        self.clock = clock
        self.rng = rng
        self.stop = stop or asyncio.Event()
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.uidvalidity: int | None = None
        #: the latest outcomes (the demo's table, tests); bounded, the journal is the record
        self.outcomes: deque[Outcome] = deque(maxlen=1_000)

    @property
    def mode(self) -> str:
        return self.env.mode

    def key(self, uid: int) -> Key:
        assert self.uidvalidity is not None, "open the mailbox first"
        return Key(self.mailbox.account, self.mailbox.mailbox, self.uidvalidity, uid)

    # -- the mailbox's identity ----------------------------------------------------------
    def opened(self, uidvalidity: int) -> None:
        """Called after every (re)connect with the mailbox's UIDVALIDITY."""
        changed = self.journal.note_uidvalidity(self.mailbox.account, self.mailbox.mailbox, uidvalidity, self.clock())
        if changed:
            log.warning("UIDVALIDITY of %s changed (%s -> %s): cached UIDs are void; known messages are matched by "
                        "Message-ID, and mail that arrived before now gets no automatic reply",
                        self.mailbox.mailbox, self.uidvalidity, uidvalidity)
        self.uidvalidity = uidvalidity

    # -- reconciliation ----------------------------------------------------------------
    async def reconcile(self) -> int:
        """Finish what a previous run left, then process every UID above the ledger's watermark.

        Returns the number of messages handled. When ``stop`` is set it stops between batches,
        after a batch's fetch (nothing of it begun), or between the sends of a batch (what is
        sent is filed; what is decided and unsent is finished at the next start)."""
        n = 0
        acct, mbox = self.mailbox.account, self.mailbox.mailbox
        try:
            for row in self.journal.unfinished(acct, mbox):
                if self.stop.is_set():
                    return n
                if row.key.uidvalidity != self.uidvalidity:
                    # its UID is void: send what is pending; the move waits until the message is
                    # matched again by Message-ID under its new UID
                    await self.finish(row, can_move=False)
                    continue
                await self.finish(row)
                n += 1
            for row in self._new_rows():
                if self.stop.is_set():
                    return n
                await self.process(row.key.uid)
                n += 1
            watermark = self.journal.max_uid(acct, mbox, self.uidvalidity)
            uids = await self.mailbox.uids_after(watermark)
            for i in range(0, len(uids), SIZE_QUERY):
                chunk = uids[i:i + SIZE_QUERY]
                sizes = await self.mailbox.sizes(chunk)
                for batch in plan_batches(chunk, sizes, self.batch_size, self.batch_bytes,
                                          self.mailbox_limit()):
                    if self.stop.is_set():
                        return n
                    await self.process_batch(batch)
                    n += len(batch)
            return n
        finally:
            await self.mailer.close()

    def mailbox_limit(self) -> int:
        s = getattr(self.mailbox, "s", None)
        return int(getattr(s, "max_message_bytes", 0) or 0) or 25_000_000

    def _new_rows(self) -> list[Row]:
        rows = self.journal.db.execute(
            "SELECT id FROM messages WHERE account=? AND mailbox=? AND uidvalidity=? AND state='new' ORDER BY id",
            (self.mailbox.account, self.mailbox.mailbox, self.uidvalidity)).fetchall()
        return [self.journal.by_id(r[0]) for r in rows]

    # -- messages ------------------------------------------------------------------------
    async def process(self, uid: int) -> Outcome | None:
        """One message (a batch of one)."""
        return (await self.process_batch([uid])).get(uid)

    async def process_batch(self, uids: list[int]) -> dict[int, Outcome | None]:
        """Fetch, decide, send, file and mark done a batch of messages.

        IMAP: one FETCH, then one STORE and one MOVE per destination folder. Journal: one commit
        for the batch's ledger rows (their ``attempts`` counted *before* anything is classified,
        so a message that crashes guard is still found out), one for all the decisions and
        intents, two per send (the commit point and "sent"), one for "done". A message seen
        before (a retry after an error or a crash) is processed on its own, so that only the
        message at fault accumulates attempts. Returns an outcome (or None: nothing to do) per UID.
        """
        results: dict[int, Outcome | None] = {}
        fresh: list[int] = []
        for uid in uids:
            row = self.journal.get(self.key(uid))
            if row is None:
                fresh.append(uid)
            elif row.state in ("done", "poison"):
                results[uid] = None
            elif row.state == "decided":
                results[uid] = await self.finish(row)
            else:  # "new": an earlier attempt failed or crashed
                results[uid] = await self._process_retry(row)
        if not fresh:
            return results
        fetched = await self.mailbox.fetch_many(fresh)
        if self.stop.is_set():
            return results  # stopping: nothing of this batch was begun, the next start takes it up
        started: list[tuple[Row, Fetched, ParsedMessage]] = []
        with self.journal.transaction():
            for uid in fresh:
                f = fetched.get(uid)
                if f is None:
                    log.info("UID %s is no longer in %s", uid, self.mailbox.mailbox)
                    results[uid] = None
                    continue
                msg = parse(f.raw)
                begun = self._begin(self.key(uid), f, msg)
                if not isinstance(begun, Row):
                    results[uid] = begun
                    continue
                started.append((begun, f, msg))
        decided: list[tuple[Row, Outcome | None]] = []
        poisoned: list[tuple[Row, Outcome]] = []
        with self.journal.transaction():
            for row, f, msg in started:
                if row.state == "decided":  # adopted after a UIDVALIDITY change, already decided
                    decided.append((row, None))
                    continue
                out = self._decide(row, f, msg)
                results[row.key.uid] = out
                if out.state == "decided":
                    decided.append((self.journal.by_id(row.id), out))
                elif out.state == "poison":
                    poisoned.append((row, out))
        await self.finish_many(decided)
        for row, out in poisoned:
            results[row.key.uid] = await self.poison(row, out.note or "error", out.subject)
        return results

    async def _process_retry(self, row: Row) -> Outcome | None:
        f = (await self.mailbox.fetch_many([row.key.uid])).get(row.key.uid)
        if f is None:
            log.info("UID %s is no longer in %s", row.key.uid, self.mailbox.mailbox)
            self.journal.mark_done(row.id, self.clock(), note="gone from the mailbox before processing")
            return None
        msg = parse(f.raw)
        row = self._begin(row.key, f, msg)  # commits the attempt before classifying
        if not isinstance(row, Row):
            return row
        if row.state == "decided":
            return await self.finish(row)
        if row.attempts > self.max_attempts:
            return await self.poison(row, f"processing failed {row.attempts - 1} times", msg.subject)
        out = self._decide(row, f, msg)
        if out.state == "decided":
            await self.finish_many([(self.journal.by_id(row.id), out)])
        elif out.state == "poison":
            return await self.poison(row, out.note or "error", msg.subject)
        return out

    def _begin(self, key: Key, f: Fetched, msg: ParsedMessage) -> Row | Outcome | None:
        """The ledger row for a fetched message (or an outcome: a duplicate by Message-ID, or None)."""
        now = self.clock()
        mid = msg.message_id
        row = self.journal.get(key)
        if row is None and mid:
            other = self.journal.by_message_id(key.account, mid, exclude=key)
            if other is not None:
                if other.state in ("new", "decided") and other.key.uidvalidity != key.uidvalidity \
                        and other.key.mailbox == key.mailbox:
                    self.journal.adopt(other.id, key, now)
                    log.info("UID %s: adopted ledger row %s after a UIDVALIDITY change", key.uid, other.id)
                    row = self.journal.by_id(other.id)
                    if row.state == "decided":
                        return row  # the caller finishes it
                else:
                    note = f"duplicate of ledger row {other.id} (same Message-ID): left alone, nothing sent"
                    self.journal.record_skip(key, message_id=mid, arrived=f.arrived, note=note, now=now)
                    decision_log.info("uid=%s uidvalidity=%s message_id=%s duplicate of row %s: left alone",
                                      key.uid, key.uidvalidity, mid, other.id)
                    out = Outcome(key.uid, mid, state="duplicate", note=note, subject=msg.subject)
                    self.outcomes.append(out)
                    return out
        row = self.journal.begin(key, message_id=mid, arrived=f.arrived, now=now)
        try:  # the digest's facts (sender, subject, date, campaign fingerprint; never the body)
            record_facts(self.journal, row.id, msg)
        except Exception:  # pragma: no cover - the digest must never stop a message being handled
            log.exception("UID %s: could not record the digest facts", key.uid)
        return row

    def _decide(self, row: Row, f: Fetched, msg: ParsedMessage) -> Outcome:
        """Classify, pick the plan, gate and render; journal the decision and its intents.

        Pure but for the journal (reads of the reply history, and the writes): nothing is sent.
        State of the returned outcome: "decided", "error" (will be retried) or "poison"."""
        key, mid, uid = row.key, msg.message_id, row.key.uid
        now = self.clock()
        try:
            verdict = self.classifier.classify(msg)
            plan = decide(self.policy, verdict)
            recipient = reply_recipient(msg)
            histories = self.reply_histories(recipient, plan, now, key.account, key.mailbox)
            breaker_due = self.journal.replies_since(now - timedelta(hours=1), template="breaker_alert") == 0
            decision = prepare(f.raw, msg, verdict, plan, env=self.env, now=now, arrived=f.arrived,
                               histories=histories, breaker_alert_due=breaker_due, token=secrets.token_hex(8))
        except Exception as exc:  # a bug or a hostile message: never an auto-reply from here
            error = f"{type(exc).__name__} while deciding"
            self.journal.record_error(row.id, error, now)
            log.error("UID %s (Message-ID %s): %s (attempt %s of %s)", uid, mid, error, row.attempts,
                      self.max_attempts, exc_info=log.isEnabledFor(logging.DEBUG))
            if row.attempts >= self.max_attempts:
                return Outcome(uid, mid, state="poison", note=error, subject=msg.subject)
            return Outcome(uid, mid, state="error", note=error, subject=msg.subject)
        note = "message larger than imap.max_message_bytes: read truncated" if f.truncated else None
        summary = decision.summary()
        self.journal.record_decision(
            row.id, category=verdict.category, verdict=verdict.to_dict(), plan=decision.plan.describe(),
            folder=decision.folder, flag=decision.flag, suppressed=[list(s) for s in decision.suppressed],
            outgoing=[Outgoing(o.kind, o.template, o.recipient, o.envelope_from, o.message_id, o.raw,
                               history_as=o.headers.get("shadow_for") or o.recipient)
                      for o in decision.outgoing], mode=self.mode, now=now, note=note)
        decision_log.info(
            "uid=%s uidvalidity=%s message_id=%s category=%s score=%.1f inner=%s paid=%s row=%s sends=%s "
            "suppressed=%s folder=%s mode=%s", uid, key.uidvalidity, mid, summary["category"], summary["score"],
            summary["inner"], summary["paid"], summary["row"], ",".join(summary["sends"]) or "-",
            " | ".join(summary["suppressed"]) or "-", summary["folder"] or "(left in place)", self.mode)
        outcome = Outcome(uid, mid, verdict.category, plan.row, suppressed=summary["suppressed"],
                          folder=decision.folder, subject=msg.subject, state="decided")
        self.outcomes.append(outcome)
        return outcome

    def reply_histories(self, recipient: str, plan, now: datetime, account: str,
                        mailbox: str) -> dict[str, ReplyHistory]:
        """The reply gate's view of the journal for the plan's replies (what was sent, and when)."""
        state = self.journal.mailbox_state(account, mailbox, now)
        last_hour = self.journal.replies_since(now - timedelta(hours=1))
        out = {}
        for action in plan.sends:
            if action.do == "reply":
                out[action.template] = ReplyHistory(
                    last_same=self.journal.last_reply(recipient, action.template) if recipient else None,
                    last_hour=last_hour, first_start=state.first_start, uidvalidity_reset=state.uidvalidity_reset)
        return out

    # -- carrying out --------------------------------------------------------------------
    async def send_outbox(self, row: Row, outcome: Outcome | None = None) -> tuple[bool, bool]:
        """Send the row's unsent outbox entries. Returns (pending, routing_failed): pending when a
        send waits for a retry; routing_failed when a forward or alert failed for good."""
        pending = routing_failed = False
        for ob in self.journal.outbox(row.id):
            if ob.state == "sending":
                # guard stopped at or after this send's commit point: the server has it (see journal)
                self.journal.mark_unconfirmed(ob.id, self.clock())
                log.warning("outbox %s (%s of UID %s, Message-ID %s) was being handed to the SMTP server when "
                            "guard stopped: taken as sent (unconfirmed), not sent again", ob.id, ob.kind,
                            row.key.uid, ob.message_id)
                ob = replace(ob, state="sent")
            if ob.state == "sent":
                if outcome is not None:
                    outcome.sent.append(f"{ob.kind}:{ob.template}")
                continue
            if ob.state == "failed":
                routing_failed |= ob.kind in ("forward", "alert")
                continue
            if ob.next_attempt > self.clock():
                pending = True
                continue
            try:
                await self.mailer.send(ob.raw, ob.envelope_from, [ob.recipient],
                                       on_commit=partial(self.journal.mark_sending, ob.id, self.clock()))
            except TransientIOError as exc:
                attempt = ob.attempts + 1
                if attempt >= self.retry.max_attempts:
                    self.journal.mark_failed(ob.id, f"gave up after {attempt} attempts: {exc}")
                    log.error("outbox %s (%s of UID %s): giving up after %s attempts: %s", ob.id, ob.kind,
                              row.key.uid, attempt, exc)
                    routing_failed |= ob.kind in ("forward", "alert")
                    continue
                delay = self.retry.delay(attempt, self.rng())
                self.journal.mark_retry(ob.id, str(exc), self.clock() + timedelta(seconds=delay))
                log.warning("outbox %s (%s of UID %s): %s; retry %s in %.0f s", ob.id, ob.kind, row.key.uid, exc,
                            attempt, delay)
                pending = True
                continue
            except PermanentIOError as exc:
                self.journal.mark_failed(ob.id, str(exc))
                log.error("outbox %s (%s of UID %s): permanent failure: %s", ob.id, ob.kind, row.key.uid, exc)
                routing_failed |= ob.kind in ("forward", "alert")
                continue
            self.journal.mark_sent(ob.id, self.clock())
            if outcome is not None:
                outcome.sent.append(f"{ob.kind}:{ob.template}")
        return pending, routing_failed

    async def finish(self, row: Row, outcome: Outcome | None = None, *, can_move: bool = True) -> Outcome | None:
        """Send what is still to send, then flag/move and mark done. Returns early if sends must wait."""
        if not can_move:
            pending, _ = await self.send_outbox(row, outcome)
            if outcome is not None:
                outcome.state = "waiting"
            return outcome
        await self.finish_many([(row, outcome)])
        return outcome

    async def finish_many(self, items: list[tuple[Row, Outcome | None]]) -> None:
        """Send each row's pending mail, then flag and move the finished ones (one command per
        folder) and mark them done in one commit. A row whose sends wait for a retry stays."""
        filing: list[tuple[Row, Outcome | None, str | None, bool, str | None]] = []
        for row, outcome in items:
            if self.stop.is_set() and filing:
                break  # stopping: the rest stay decided and are finished at the next start
            pending, routing_failed = await self.send_outbox(row, outcome)
            if pending:
                if outcome is not None:
                    outcome.state = "waiting"
                continue
            folder, flag, note = row.folder, row.flag, None
            if routing_failed:
                folder, flag = self.env.folders.review, True
                note = "a forward or alert to the coordinator failed: filed for review"
            filing.append((row, outcome, folder, flag, note))
        if not filing:
            return
        gone: set[int] = set()
        if self.mode != "dry-run":
            await self.mailbox.flag_many([r.key.uid for r, _, _, flag, _ in filing if flag])
            by_folder: dict[str, list[int]] = {}
            for r, _, folder, _, _ in filing:
                if folder:
                    by_folder.setdefault(folder, []).append(r.key.uid)
            for folder, uids in by_folder.items():
                moved = await self.mailbox.move_many(uids, folder)
                gone |= set(uids) - moved
        now = self.clock()
        with self.journal.transaction():
            for row, outcome, folder, _, note in filing:
                if row.key.uid in gone and folder:
                    note = "gone from the mailbox before the move"
                self.journal.mark_done(row.id, now, folder=folder, note=note)
                if outcome is not None:
                    outcome.state = "done"
                    outcome.folder = folder
                    outcome.note = note

    async def poison(self, row: Row, reason: str, subject: str = "") -> Outcome:
        folder = self.env.folders.review
        log.error("UID %s (Message-ID %s) is a poison message (%s): filed in %s, flagged, nobody answered",
                  row.key.uid, row.message_id, reason, folder)
        if self.mode != "dry-run":
            await self.mailbox.flag_many([row.key.uid])
            await self.mailbox.move_many([row.key.uid], folder)
        self.journal.mark_poison(row.id, reason, folder, self.clock())
        decision_log.info("uid=%s uidvalidity=%s message_id=%s poison: %s folder=%s", row.key.uid,
                          row.key.uidvalidity, row.message_id, reason, folder)
        out = Outcome(row.key.uid, row.message_id, state="poison", note=reason, folder=folder, subject=subject)
        self.outcomes.append(out)
        return out


#: UIDs whose sizes are asked in one FETCH when planning batches
SIZE_QUERY = 1000


def plan_batches(uids: list[int], sizes: dict[int, int], max_count: int, max_bytes: int,
                 per_message_limit: int) -> list[list[int]]:
    """Consecutive batches of at most ``max_count`` messages and ``max_bytes`` of mail (each message
    counted up to ``per_message_limit``, what is read of it); a bigger message is a batch of its
    own. UIDs without a size (gone since the search) are dropped."""
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_bytes = 0
    for uid in uids:
        if uid not in sizes:
            continue
        size = min(sizes[uid], per_message_limit)
        if cur and (len(cur) >= max_count or cur_bytes + size > max_bytes):
            batches.append(cur)
            cur, cur_bytes = [], 0
        cur.append(uid)
        cur_bytes += size
    if cur:
        batches.append(cur)
    return batches
