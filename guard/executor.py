"""Carrying out decisions, crash-safely: journal the intent, send, journal "sent", move, journal "done".

The executor is the only place (with the daemon) that touches the mailbox, the
mailer and the journal. For each message:

1. skip it if the ledger has it as done; resume it if it was decided;
2. fetch it, parse and classify it, pick the plan, gate and render the sends
   (pure: :mod:`guard.pipeline`);
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from .classify import Classifier
from .digest_journal import record_facts
from .errors import PermanentIOError, TransientIOError
from .journal import Journal, Key, Outgoing, Row
from .mailbox import Mailbox
from .mailer import Mailer
from .message import parse
from .pipeline import Env, prepare, reply_recipient
from .policy import Policy, decide
from .reply_gate import ReplyHistory

log = logging.getLogger("guard.executor")
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
                 rng: Callable[[], float] = random.random, stop: asyncio.Event | None = None) -> None:
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
        self.uidvalidity: int | None = None
        self.outcomes: list[Outcome] = []

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

        Returns the number of messages handled; stops between messages when ``stop`` is set."""
        n = 0
        acct, mbox = self.mailbox.account, self.mailbox.mailbox
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
        for uid in await self.mailbox.uids_after(watermark):
            if self.stop.is_set():
                return n
            await self.process(uid)
            n += 1
        return n

    def _new_rows(self) -> list[Row]:
        rows = self.journal.db.execute(
            "SELECT id FROM messages WHERE account=? AND mailbox=? AND uidvalidity=? AND state='new' ORDER BY id",
            (self.mailbox.account, self.mailbox.mailbox, self.uidvalidity)).fetchall()
        return [self.journal.by_id(r[0]) for r in rows]

    # -- one message ---------------------------------------------------------------------
    async def process(self, uid: int) -> Outcome | None:
        key = self.key(uid)
        row = self.journal.get(key)
        if row is not None and row.state in ("done", "poison"):
            return None
        if row is not None and row.state == "decided":
            return await self.finish(row)
        fetched = await self.mailbox.fetch(uid)
        if fetched is None:
            log.info("UID %s is no longer in %s", uid, self.mailbox.mailbox)
            if row is not None:
                self.journal.mark_done(row.id, self.clock(), note="gone from the mailbox before processing")
            return None
        now = self.clock()
        msg = parse(fetched.raw)
        mid = msg.message_id
        if row is None and mid:
            other = self.journal.by_message_id(key.account, mid, exclude=key)
            if other is not None:
                if other.state in ("new", "decided") and other.key.uidvalidity != key.uidvalidity \
                        and other.key.mailbox == key.mailbox:
                    self.journal.adopt(other.id, key, now)
                    log.info("UID %s: adopted ledger row %s after a UIDVALIDITY change", uid, other.id)
                    row = self.journal.by_id(other.id)
                    if row.state == "decided":
                        return await self.finish(row)
                else:
                    note = f"duplicate of ledger row {other.id} (same Message-ID): left alone, nothing sent"
                    self.journal.record_skip(key, message_id=mid, arrived=fetched.arrived, note=note, now=now)
                    decision_log.info("uid=%s uidvalidity=%s message_id=%s duplicate of row %s: left alone",
                                      uid, key.uidvalidity, mid, other.id)
                    out = Outcome(uid, mid, state="duplicate", note=note, subject=msg.subject)
                    self.outcomes.append(out)
                    return out
        row = self.journal.begin(key, message_id=mid, arrived=fetched.arrived, now=now)
        try:  # the digest's facts (sender, subject, date, campaign fingerprint; never the body)
            record_facts(self.journal, row.id, msg)
        except Exception:  # pragma: no cover - the digest must never stop a message being handled
            log.exception("UID %s: could not record the digest facts", uid)
        if row.attempts > self.max_attempts:
            return await self.poison(row, f"processing failed {row.attempts - 1} times", msg.subject)
        try:
            verdict = self.classifier.classify(msg)
            plan = decide(self.policy, verdict)
            recipient = reply_recipient(msg)
            histories = self._histories(recipient, plan, now, key)
            breaker_due = self.journal.replies_since(now - timedelta(hours=1), template="breaker_alert") == 0
            decision = prepare(fetched.raw, msg, verdict, plan, env=self.env, now=now, arrived=fetched.arrived,
                               histories=histories, breaker_alert_due=breaker_due, token=secrets.token_hex(8))
        except Exception as exc:  # a bug or a hostile message: never an auto-reply from here
            error = f"{type(exc).__name__} while deciding"
            self.journal.record_error(row.id, error, now)
            log.error("UID %s (Message-ID %s): %s (attempt %s of %s)", uid, mid, error, row.attempts,
                      self.max_attempts, exc_info=log.isEnabledFor(logging.DEBUG))
            if row.attempts >= self.max_attempts:
                return await self.poison(row, error, msg.subject)
            return Outcome(uid, mid, state="error", note=error, subject=msg.subject)
        note = "message larger than imap.max_message_bytes: read truncated" if fetched.truncated else None
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
                          folder=decision.folder, subject=msg.subject)
        self.outcomes.append(outcome)
        return await self.finish(self.journal.by_id(row.id), outcome)

    def _histories(self, recipient: str, plan, now: datetime, key: Key) -> dict[str, ReplyHistory]:
        state = self.journal.mailbox_state(key.account, key.mailbox, now)
        last_hour = self.journal.replies_since(now - timedelta(hours=1))
        out = {}
        for action in plan.sends:
            if action.do == "reply":
                out[action.template] = ReplyHistory(
                    last_same=self.journal.last_reply(recipient, action.template) if recipient else None,
                    last_hour=last_hour, first_start=state.first_start, uidvalidity_reset=state.uidvalidity_reset)
        return out

    async def finish(self, row: Row, outcome: Outcome | None = None, *, can_move: bool = True) -> Outcome | None:
        """Send what is still to send, then flag/move and mark done. Returns early if sends must wait."""
        pending = False
        routing_failed = False
        for ob in self.journal.outbox(row.id):
            if ob.state == "sent":
                if outcome is not None:
                    outcome.sent.append(f"{ob.kind}:{ob.template}")
                continue
            if ob.state == "failed":
                routing_failed |= ob.kind in ("forward", "alert")
                continue
            now = self.clock()
            if ob.next_attempt > now:
                pending = True
                continue
            if self.journal.mark_sending(ob.id, now):
                log.warning("outbox %s (%s of UID %s) may have been sent before a crash: sending again with the "
                            "same Message-ID %s", ob.id, ob.kind, row.key.uid, ob.message_id)
            try:
                await self.mailer.send(ob.raw, ob.envelope_from, [ob.recipient])
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
        if pending or not can_move:
            if outcome is not None:
                outcome.state = "waiting"
            return outcome
        folder, flag, note = row.folder, row.flag, None
        if routing_failed:
            folder, flag = self.env.folders.review, True
            note = "a forward or alert to the coordinator failed: filed for review"
        if self.mode != "dry-run":
            if flag:
                await self.mailbox.flag(row.key.uid)
            if folder:
                if not await self.mailbox.move(row.key.uid, folder):
                    note = "gone from the mailbox before the move"
        self.journal.mark_done(row.id, self.clock(), folder=folder, note=note)
        if outcome is not None:
            outcome.folder = folder
            outcome.note = note
        return outcome

    async def poison(self, row: Row, reason: str, subject: str = "") -> Outcome:
        folder = self.env.folders.review
        log.error("UID %s (Message-ID %s) is a poison message (%s): filed in %s, flagged, nobody answered",
                  row.key.uid, row.message_id, reason, folder)
        if self.mode != "dry-run":
            await self.mailbox.flag(row.key.uid)
            await self.mailbox.move(row.key.uid, folder)
        self.journal.mark_poison(row.id, reason, folder, self.clock())
        decision_log.info("uid=%s uidvalidity=%s message_id=%s poison: %s folder=%s", row.key.uid,
                          row.key.uidvalidity, row.message_id, reason, folder)
        out = Outcome(row.key.uid, row.message_id, state="poison", note=reason, folder=folder, subject=subject)
        self.outcomes.append(out)
        return out
