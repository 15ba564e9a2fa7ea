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
again, an intent is never lost.

A backlog is a pipeline of batches (:meth:`Executor.process_batch`): once a batch is analysed, the
next one is fetched, its ledger rows and attempts committed and its messages streamed to the
analyser's worker, which reads them while this batch is decided, sent and filed in the main
process; the sends of a batch go over several SMTP connections at once (``mailer.concurrency``,
:class:`guard.daemon.mailer.SmtpPool`), each message's own sends in order, each with its commit
point; their "sent" rows are committed without an fsync each and fsynced together once the
batch's sends are over (one fsync per batch, not per send). The sent messages of a backlog are
then filed ``FILE_EVERY`` (500) at a time, not batch by batch: one STORE and one MOVE per folder
for them all, then "done" for them in one commit (a MOVE costs the server about as much for one
UID as for hundreds, and more the bigger the inbox; until its move a message stays "decided",
its sends journalled as sent, so a crash files it at the next start and sends nothing again). A message whose processing fails
``max_attempts`` times (or that keeps crashing guard) is *poison*: it goes to
Review, flagged, and nobody is answered from the error path.

Logging: the ``guard.decision`` logger gets one line per message with
identifiers and decisions only (UID, Message-ID, category, actions, reasons);
never bodies, addresses, card numbers or credentials.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import hashlib
import logging
import random
import secrets
import sqlite3
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Callable

from guard.classification.classify import Classifier
from guard.digest.records import store_facts
from guard.errors import PermanentIOError, TransientIOError
from guard.daemon.budget import AnalysisFailed, Analysed, BudgetExceeded, InlineAnalyser, WorkerDied
from guard.daemon.journal import Journal, Key, Outgoing, Row
from guard.daemon.mailbox import Fetched, Mailbox
from guard.daemon.mailer import Mailer
from guard.mail.message import ParsedMessage
from guard.mail.textutil import mask_card_numbers
from guard.respond.prepare import LOOP_ALERT, TO_COORDINATOR, Env, SenderHistory, history_key, prepare
from guard.respond.reply_gate import domain_key
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


@dataclass
class _Started:
    """A batch whose fresh messages are fetched, begun (attempts committed) and being analysed."""

    uids: tuple[int, ...]
    results: dict[int, Outcome | None]
    begun: list[tuple[Row, Fetched]] = field(default_factory=list)
    #: the task analysing ``begun`` (one Analysed or Outcome each, in order); None: nothing begun
    analysis: asyncio.Future | None = None


class Executor:
    def __init__(self, *, journal: Journal, mailbox: Mailbox, mailer: Mailer, classifier: Classifier, policy: Policy,
                 env: Env, max_attempts: int = 3, retry: RetryPolicy = RetryPolicy(), clock: Clock = utc_now,
                 rng: Callable[[], float] = random.random, stop: asyncio.Event | None = None,
                 batch_size: int = 50, batch_bytes: int = 16_000_000, analyser=None,
                 outbox_retention_days: float = 0.0, progress: Callable[[], None] | None = None) -> None:
        self.journal = journal
        #: parses and classifies each message (guard run: a worker process under the time budget)
        self.analyser = analyser if analyser is not None else InlineAnalyser()
        #: sent mail's bodies are purged from the outbox this many days after the send (0: at once)
        self.outbox_retention_days = outbox_retention_days
        #: called whenever a message moves on (read, sent, filed): /healthz's stuck-watcher check
        self.progress = progress
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
        #: the next batch, begun and being analysed while the current one is finished (see process_batch)
        self._ahead: _Started | None = None
        #: a "sent" was committed without an fsync since the last Journal.sync
        self._unsynced = False
        #: messages of a backlog sent and waiting to be filed (see :meth:`finish_many`): moved,
        #: ``file_every`` at a time, and journalled as done after their move
        self._unfiled: list[tuple[Row, Outcome | None, str | None, bool, str | None]] = []
        self._defer_filing = False
        self.file_every = FILE_EVERY

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

    def _progress(self) -> None:
        if self.progress is not None:
            self.progress()

    # -- reconciliation ----------------------------------------------------------------
    async def reconcile(self) -> int:
        """Finish what a previous run left, then process every UID above the ledger's watermark.

        Returns the number of messages handled. When ``stop`` is set it stops between batches,
        after a batch's fetch (nothing of it begun), or between the sends of a batch (what is
        sent is filed; what is decided and unsent is finished at the next start)."""
        n = 0
        acct, mbox = self.mailbox.account, self.mailbox.mailbox
        if self.outbox_retention_days > 0:
            self.journal.purge_sent_outbox(self.clock() - timedelta(days=self.outbox_retention_days))
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
            batches = self._batches(uids)
            batch = await anext(batches, None)
            # a backlog's sent messages are filed FILE_EVERY at a time (finish_many), not per batch
            self._defer_filing = True
            try:
                while batch is not None:
                    if self.stop.is_set() and not self._is_ahead(batch):
                        break  # (a batch already begun, read ahead, is finished first)
                    after = None if self.stop.is_set() else await anext(batches, None)
                    # the next batch is read and analysed while this one is decided, sent and filed
                    await self.process_batch(batch, ahead=after)
                    n += len(batch)
                    batch = after
                await self._file_unfiled()
            finally:
                # on an error, what is still unfiled stays "decided" (sent): filed at the next reconcile
                self._defer_filing = False
                self._unfiled.clear()
            return n
        finally:
            await self._drop_ahead()
            await self.mailer.close()

    async def _batches(self, uids: list[int]):
        """The batches of ``uids`` (sizes asked ``SIZE_QUERY`` UIDs at a time)."""
        for i in range(0, len(uids), SIZE_QUERY):
            chunk = uids[i:i + SIZE_QUERY]
            sizes = await self.mailbox.sizes(chunk)
            for batch in plan_batches(chunk, sizes, self.batch_size, self.batch_bytes, self.mailbox_limit()):
                yield batch

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

    async def process_batch(self, uids: list[int], *, ahead: list[int] | None = None) -> dict[int, Outcome | None]:
        """Fetch, decide, send, file and mark done a batch of messages.

        IMAP: one FETCH, then one STORE and one MOVE per destination folder (within
        :meth:`reconcile`'s backlog, the STORE and MOVEs of ``file_every`` messages of several
        batches at once, and their "done" then: see :meth:`finish_many`). Journal: one commit
        for the batch's ledger rows and their ``attempts``, *before* any of it is parsed (so a
        message that hangs or crashes guard is found out and costs only itself one attempt), one
        for all the decisions and intents, two per send (the commit point and "sent", neither
        fsynced: one fsync for all the batch's sends once they are over), one for "done". Each message is parsed and classified by the analyser (a worker process under
        ``daemon.message_time_budget_seconds``, :mod:`guard.daemon.budget`): past the budget it is
        poison at once. A message seen before (a retry after an error or a crash) is processed
        on its own, so that only the message at fault accumulates attempts. Returns an outcome
        (or None: nothing to do) per UID.

        ``ahead``: the next batch. Once this batch is analysed (and only then: one batch at a time
        is begun and unread), the next one is fetched, its ledger rows and attempts committed and
        its analysis started in the worker, while this one is decided, sent and filed; the next
        call with those UIDs takes it up. Each message keeps every step and commit of its own.
        """
        started = self._claim_ahead(uids)
        if started is None:
            started = await self._start_batch(uids)
        return await self._complete_batch(started, ahead)

    def _is_ahead(self, uids: list[int]) -> bool:
        return self._ahead is not None and self._ahead.uids == tuple(uids)

    def _claim_ahead(self, uids: list[int]) -> "_Started | None":
        if not self._is_ahead(uids):
            return None
        started, self._ahead = self._ahead, None
        return started

    async def _drop_ahead(self) -> None:
        """A batch read ahead and not taken up (an error, or stopping): its analysis is cancelled;
        its rows stay "new" and are retried, one by one, at the next reconcile."""
        started, self._ahead = self._ahead, None
        if started is not None and started.analysis is not None:
            started.analysis.cancel()
            try:
                await started.analysis
            except BaseException:
                pass

    async def _start_batch(self, uids: list[int]) -> "_Started":
        """Rows seen before handled (finished or retried); the others fetched, their ledger rows and
        attempts committed, then their analysis started (a task)."""
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
            else:  # "new": an earlier attempt failed, hung or crashed
                results[uid] = await self._process_retry(row)
        started = _Started(tuple(uids), results)
        if not fresh:
            return started
        fetched = await self.mailbox.fetch_many(fresh)
        if self.stop.is_set():
            return started  # stopping: nothing of this batch was begun, the next start takes it up
        now = self.clock()
        with self.journal.transaction():  # the attempts, committed before anything reads the mail
            for uid in fresh:
                f = fetched.get(uid)
                if f is None:
                    log.info("UID %s is no longer in %s", uid, self.mailbox.mailbox)
                    results[uid] = None
                    continue
                started.begun.append((self.journal.begin(self.key(uid), message_id=None, arrived=f.arrived,
                                                         now=now), f))
        if started.begun:
            started.analysis = asyncio.ensure_future(self._analyse_all(started.begun))
            # let the task begin (the messages handed to the worker) before the caller goes on: the
            # caller decides the previous batch next, without an await, and the worker would wait
            # for the first await after it (the sends) to be given this batch
            await asyncio.sleep(0)
        return started

    async def _complete_batch(self, started: "_Started", ahead: list[int] | None) -> dict[int, Outcome | None]:
        results = started.results
        if started.analysis is None:
            return results
        outcomes = await started.analysis
        if ahead and not self.stop.is_set():
            self._ahead = await self._start_batch(ahead)
        analysed: list[tuple[Row, Fetched, Analysed]] = []
        poisoned: list[tuple[Row, Outcome]] = []
        for (row, f), a in zip(started.begun, outcomes):
            if isinstance(a, Analysed):
                analysed.append((row, f, a))
            elif a.state == "poison":
                poisoned.append((row, a))
            else:
                results[row.key.uid] = a
        started_rows: list[tuple[Row, Fetched, Analysed]] = []
        with self.journal.transaction():
            for row, f, a in analysed:
                identified = self._identify(row, f, a)
                if not isinstance(identified, Row):
                    results[row.key.uid] = identified
                    continue
                started_rows.append((identified, f, a))
        decided: list[tuple[Row, Outcome | None]] = []
        with self.journal.transaction():
            for row, f, a in started_rows:
                if row.state == "decided":  # adopted after a UIDVALIDITY change, already decided
                    decided.append((row, None))
                    continue
                out = self._decide(row, f, a)
                results[row.key.uid] = out
                if out.state == "decided":
                    decided.append((self.journal.by_id(row.id), out))
                elif out.state == "poison":
                    poisoned.append((row, out))
        await self.finish_many(decided)
        for row, out in poisoned:
            results[row.key.uid] = await self.poison(row, out.note or "error", out.subject)
        return results

    async def _analyse_all(self, begun: list[tuple[Row, Fetched]]) -> list[Analysed | Outcome]:
        """Each begun message parsed and classified, in order: streamed to the worker when the
        analyser can (:meth:`ProcessAnalyser.analyse_many`), else one by one."""
        many = getattr(self.analyser, "analyse_many", None)
        if many is None or len(begun) == 1:
            return [await self._analyse(row, f) for row, f in begun]
        got = await many([f.raw for _, f in begun], self._classifier_now())
        return [self._analysis_outcome(row, f, a) for (row, f), a in zip(begun, got)]

    def _classifier_now(self):
        """The classifier to hand the analyser for the next messages.

        One that follows the journal's allow- and denylists (``current()``: the corrections'
        LiveListsClassifier) is asked for its classifier of the moment here, in the main process,
        once per batch (the lists change only between reconciles, when corrections are read);
        the worker then classifies with it as it is, instead of counting the lists in the journal
        for every message through the SQLite connection it inherited across the fork. New lists
        give a new classifier, and the analyser a new worker for it (as a reload does)."""
        current = getattr(self.classifier, "current", None)
        if current is None:
            return self.classifier
        try:
            return current()
        except sqlite3.Error:  # the lists cannot be read now: the classifier reads them itself, as before
            return self.classifier

    async def _analyse(self, row: Row, f: Fetched) -> Analysed | Outcome:
        """Parse and classify under the time budget (outside the event loop).

        An outcome instead when that failed: "poison" (past the budget: at once; otherwise after
        ``max_attempts``) or "error" (retried at the next reconcile)."""
        try:
            a = await self.analyser.analyse(f.raw, self._classifier_now())
        except (BudgetExceeded, WorkerDied, AnalysisFailed) as exc:
            a = exc
        return self._analysis_outcome(row, f, a)

    def _analysis_outcome(self, row: Row, f: Fetched, a: Analysed | Exception) -> Analysed | Outcome:
        """The analyser's answer for one message: the analysis, or the outcome of its failure."""
        uid, now = row.key.uid, self.clock()
        if isinstance(a, (WorkerDied, AnalysisFailed)):
            error = f"{a} while reading the message" if isinstance(a, WorkerDied) else f"{a} while deciding"
            self.journal.record_error(row.id, error, now)
            log.error("UID %s: %s (attempt %s of %s)", uid, error, row.attempts, self.max_attempts)
            state = "poison" if row.attempts >= self.max_attempts else "error"
            return Outcome(uid, None, state=state, note=error, subject=header_subject(f.raw))
        if not isinstance(a, BudgetExceeded):
            self._progress()
            return a
        reason = str(a)
        self.journal.record_error(row.id, reason, now)
        log.error("UID %s: %s: filed for review as poison", uid, reason)
        return Outcome(uid, None, state="poison", note=reason, subject=header_subject(f.raw))

    async def _process_retry(self, row: Row) -> Outcome | None:
        f = (await self.mailbox.fetch_many([row.key.uid])).get(row.key.uid)
        if f is None:
            log.info("UID %s is no longer in %s", row.key.uid, self.mailbox.mailbox)
            self.journal.mark_done(row.id, self.clock(), note="gone from the mailbox before processing")
            return None
        # the attempt is committed before the message is read again
        row = self.journal.begin(row.key, message_id=row.message_id, arrived=f.arrived, now=self.clock())
        if row.state == "decided":
            return await self.finish(row)
        if row.attempts > self.max_attempts:
            why = row.error or "guard stopped or crashed while reading it"
            return await self.poison(row, f"processing failed {row.attempts - 1} times (last: {why})",
                                     header_subject(f.raw))
        a = await self._analyse(row, f)
        if not isinstance(a, Analysed):
            if a.state == "poison":
                return await self.poison(row, a.note or "error", a.subject)
            return a
        identified = self._identify(row, f, a)
        if not isinstance(identified, Row):
            return identified
        row = identified
        if row.state == "decided":
            return await self.finish(row)
        out = self._decide(row, f, a)
        if out.state == "decided":
            await self.finish_many([(self.journal.by_id(row.id), out)])
        elif out.state == "poison":
            return await self.poison(row, out.note or "error", out.subject)
        return out

    def _identify(self, row: Row, f: Fetched, a: Analysed) -> Row | Outcome | None:
        """Once the message is read: its Message-ID and content on the ledger row, and the row
        itself, or an outcome (a duplicate: the same Message-ID *and* the same content).

        A message that reuses an earlier Message-ID with other content is a message of its own
        and is classified as usual (a scam must not hide behind a genuine message's ID)."""
        key, msg, now = row.key, a.msg, self.clock()
        mid = msg.message_id
        digest = content_digest(f.raw, msg)
        self.journal.set_identity(row.id, message_id=mid, content=digest)
        if mid:
            other = self.journal.by_message_id(key.account, mid, exclude=key)
            same = other is not None and other.content is not None and other.content == digest
            if other is not None and other.state in ("new", "decided") and other.content in (None, digest) \
                    and other.key.uidvalidity != key.uidvalidity and other.key.mailbox == key.mailbox:
                self.journal.discard(row.id)
                self.journal.adopt(other.id, key, now)
                log.info("UID %s: adopted ledger row %s after a UIDVALIDITY change", key.uid, other.id)
                return self.journal.by_id(other.id)  # "decided": the caller finishes it
            if other is not None and same:
                note = (f"duplicate of ledger row {other.id} (same Message-ID and content): left alone, "
                        "nothing sent")
                self.journal.record_skip(key, message_id=mid, arrived=f.arrived, note=note, now=now)
                decision_log.info("uid=%s uidvalidity=%s message_id=%s duplicate of row %s: left alone",
                                  key.uid, key.uidvalidity, mid, other.id)
                out = Outcome(key.uid, mid, state="duplicate", note=note, subject=msg.subject)
                self.outcomes.append(out)
                return out
            if other is not None:
                log.info("UID %s reuses the Message-ID of ledger row %s with other content: classified on its own",
                         key.uid, other.id)
        try:  # the digest's facts (sender, subject, date, campaign fingerprint; never the body)
            store_facts(self.journal, row.id, a.facts)
        except Exception:  # pragma: no cover - the digest must never stop a message being handled
            log.exception("UID %s: could not record the digest facts", key.uid)
        return self.journal.by_id(row.id)

    def _decide(self, row: Row, f: Fetched, a: Analysed) -> Outcome:
        """Pick the plan for the verdict, gate and render; journal the decision and its intents.

        Pure but for the journal (reads of the reply history, and the writes): nothing is sent.
        State of the returned outcome: "decided", "error" (will be retried) or "poison"."""
        msg, verdict = a.msg, a.verdict
        key, mid, uid = row.key, msg.message_id, row.key.uid
        now = self.clock()
        try:
            plan = decide(self.policy, verdict)
            recipient = history_key(msg)  # normalised: case and +tag do not make a new sender
            histories = self.reply_histories(recipient, plan, now, key.account, key.mailbox)
            breaker_due = self.journal.replies_since(now - timedelta(hours=1), template="breaker_alert") == 0
            decision = prepare(f.raw, msg, verdict, plan, env=self.env, now=now, arrived=f.arrived,
                               histories=histories, breaker_alert_due=breaker_due, token=secrets.token_hex(8),
                               sender_history=self.sender_history(recipient, now))
        except Exception as exc:  # a bug or a hostile message: never an auto-reply from here
            error = f"{type(exc).__name__} while deciding"
            self.journal.record_error(row.id, error, now)
            log.error("UID %s (Message-ID %s): %s (attempt %s of %s)", uid, mid, error, row.attempts,
                      self.max_attempts, exc_info=log.isEnabledFor(logging.DEBUG))
            if row.attempts >= self.max_attempts:
                return Outcome(uid, mid, state="poison", note=error, subject=msg.subject)
            return Outcome(uid, mid, state="error", note=error, subject=msg.subject)
        note = "message larger than imap.max_message_bytes: read truncated" if f.truncated else None
        flag = decision.flag
        if msg.defects and not decision.folder and not flag:
            # malformed mail left in the inbox is flagged, so that somebody looks at it
            flag = True
            malformed = "malformed message (" + "; ".join(msg.defects[:5])[:300] + "): flagged for review"
            note = f"{note}; {malformed}" if note else malformed
        summary = decision.summary()
        recorded = verdict.to_dict()
        # the kind of each reason (scam, inquiry, ...): the digest shows only those that explain the verdict
        recorded["reasons"] = [{**d, "tags": list(r.tags)} for d, r in zip(recorded["reasons"], verdict.reasons)]
        if decision.language is not None:  # the reply's language and why (the digest shows it)
            recorded["reply_language"] = decision.language.to_dict()
        self.journal.record_decision(
            row.id, category=verdict.category, verdict=recorded, plan=decision.plan.describe(),
            folder=decision.folder, flag=flag, suppressed=[list(s) for s in decision.suppressed],
            outgoing=[Outgoing(o.kind, o.template, o.recipient, o.envelope_from, o.message_id, o.raw,
                               history_as=o.headers.get("history_as") or o.headers.get("shadow_for") or o.recipient)
                      for o in decision.outgoing], mode=self.mode, now=now, note=note)
        decision_log.info(
            "uid=%s uidvalidity=%s message_id=%s category=%s score=%.1f inner=%s paid=%s row=%s sends=%s "
            "suppressed=%s folder=%s mode=%s reply_language=%s", uid, key.uidvalidity, mid, summary["category"],
            summary["score"], summary["inner"], summary["paid"], summary["row"], ",".join(summary["sends"]) or "-",
            " | ".join(summary["suppressed"]) or "-", summary["folder"] or "(left in place)", self.mode,
            summary["language"] or "-")
        outcome = Outcome(uid, mid, verdict.category, plan.row, suppressed=summary["suppressed"],
                          folder=decision.folder, subject=msg.subject, state="decided")
        self.outcomes.append(outcome)
        return outcome

    def reply_histories(self, recipient: str, plan, now: datetime, account: str,
                        mailbox: str) -> dict[str, ReplyHistory]:
        """The reply gate's view of the journal for the plan's replies (what was sent, and when)."""
        state = self.journal.mailbox_state(account, mailbox, now)
        last_hour = self.journal.replies_since(now - timedelta(hours=1))
        domain_hour = self.journal.replies_to_domain(domain_key(recipient), now - timedelta(hours=1))
        out = {}
        for action in plan.sends:
            if action.do == "reply":
                out[action.template] = ReplyHistory(
                    last_same=self.journal.last_reply(recipient, action.template) if recipient else None,
                    last_hour=last_hour, first_start=state.first_start, uidvalidity_reset=state.uidvalidity_reset,
                    domain_last_hour=domain_hour)
        return out

    def sender_history(self, sender: str, now: datetime) -> SenderHistory:
        """Forwards and alerts about ``sender`` (normalised) in the last hour, and its last loop alert."""
        if not sender:
            return SenderHistory()
        return SenderHistory(self.journal.sends_about(sender, TO_COORDINATOR, now - timedelta(hours=1)),
                             self.journal.last_reply(sender, LOOP_ALERT))

    # -- carrying out --------------------------------------------------------------------
    async def send_outbox(self, row: Row, outcome: Outcome | None = None) -> tuple[bool, bool]:
        """Send the row's unsent outbox entries. Returns (pending, routing_failed): pending when a
        send waits for a retry; routing_failed when a forward or alert failed for good."""
        pending = routing_failed = False
        for ob in self.journal.outbox(row.id):
            if ob.state == "sending":
                # guard stopped at or after this send's commit point: the server has it (see journal)
                self.journal.mark_unconfirmed(ob.id, self.clock(), purge=self.outbox_retention_days <= 0)
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
            # no fsync of its own: one for the batch's sends once they are over (finish_many)
            self.journal.mark_sent(ob.id, self.clock(), purge=self.outbox_retention_days <= 0, sync=False)
            self._unsynced = True
            self._progress()
            if outcome is not None:
                outcome.sent.append(f"{ob.kind}:{ob.template}")
        return pending, routing_failed

    async def finish(self, row: Row, outcome: Outcome | None = None, *, can_move: bool = True) -> Outcome | None:
        """Send what is still to send, then flag/move and mark done. Returns early if sends must wait."""
        if not can_move:
            try:
                pending, _ = await self.send_outbox(row, outcome)
            finally:
                self._sync_sent()
            if outcome is not None:
                outcome.state = "waiting"
            return outcome
        await self.finish_many([(row, outcome)])
        return outcome

    async def finish_many(self, items: list[tuple[Row, Outcome | None]]) -> None:
        """Send each row's pending mail, then flag and move the finished ones (one command per
        folder) and mark them done in one commit. A row whose sends wait for a retry stays.

        Within :meth:`reconcile`'s backlog the finished rows are kept (sent, still "decided") and
        filed ``file_every`` at a time, and the rest when the backlog is over."""
        filing: list[tuple[Row, Outcome | None, str | None, bool, str | None]] = []
        try:
            sent_all = await self._send_all(items)
        finally:
            self._sync_sent()
        for (row, outcome), sent in zip(items, sent_all):
            if sent is None:
                continue  # stopping: not begun; it stays decided and is finished at the next start
            pending, routing_failed = sent
            if pending:
                if outcome is not None:
                    outcome.state = "waiting"
                continue
            folder, flag, note = row.folder, row.flag, None
            if routing_failed:
                folder, flag = self.env.folders.review, True
                note = "a forward or alert to the coordinator failed: filed for review"
            filing.append((row, outcome, folder, flag, note))
        if self._defer_filing:
            # In a backlog the move waits for more messages: each UID MOVE (and STORE) costs the
            # server time that grows with the inbox (Dovecot's maildir: about 2 ms per 1,000
            # messages in the inbox, whatever the number of UIDs moved), so one per folder and
            # batch made a message's cost grow with the backlog's size. The rows stay "decided"
            # (their sends journalled as sent) until their move: a crash before it files them
            # at the next start, nothing sent again.
            self._unfiled += filing
            if len(self._unfiled) >= self.file_every:
                await self._file_unfiled()
            return
        await self._file(filing)

    async def _file_unfiled(self) -> None:
        """File the backlog's messages sent and not yet moved (see :meth:`finish_many`)."""
        filing, self._unfiled = self._unfiled, []
        if filing:
            await self._file(filing)

    async def _file(self, filing: list[tuple[Row, Outcome | None, str | None, bool, str | None]]) -> None:
        """Flag and move sent messages (one STORE, then one MOVE per folder), then mark them done
        in one commit."""
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
                self._progress()
                if outcome is not None:
                    outcome.state = "done"
                    outcome.folder = folder
                    outcome.note = note

    def _sync_sent(self) -> None:
        """The sends' "sent" were committed without an fsync each: one for all of them."""
        if self._unsynced:
            self._unsynced = False
            self.journal.sync()

    async def _send_all(self, items: list[tuple[Row, Outcome | None]]) -> list[tuple[bool, bool] | None]:
        """:meth:`send_outbox` for each row, over up to ``mailer.concurrency`` SMTP connections at
        once (each row's own sends stay in order, one after the other, each with its commit point);
        None for a row not begun because guard is stopping (after at least one was)."""
        out: list[tuple[bool, bool] | None] = [None] * len(items)
        width = max(1, int(getattr(self.mailer, "concurrency", 1) or 1))
        todo = iter(range(len(items)))
        begun = 0
        failed = False

        async def lane() -> None:
            nonlocal begun, failed
            for i in todo:
                if failed or (self.stop.is_set() and begun):
                    return  # stopping: the rest stay decided and are finished at the next start
                begun += 1
                row, outcome = items[i]
                try:
                    out[i] = await self.send_outbox(row, outcome)
                except BaseException:
                    failed = True  # the other lanes finish the row in hand and take no other
                    raise

        if width == 1 or len(items) <= 1:
            await lane()
            return out
        lanes = [asyncio.ensure_future(lane()) for _ in range(min(width, len(items)))]
        try:
            done = await asyncio.gather(*lanes, return_exceptions=True)
        except BaseException:
            for t in lanes:
                t.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            raise
        for r in done:
            if isinstance(r, BaseException):
                raise r
        return out

    async def poison(self, row: Row, reason: str, subject: str = "") -> Outcome:
        folder = self.env.folders.review
        log.error("UID %s (Message-ID %s) is a poison message (%s): filed in %s, flagged, nobody answered",
                  row.key.uid, row.message_id, reason, folder)
        if self.mode != "dry-run":
            await self.mailbox.flag_many([row.key.uid])
            await self.mailbox.move_many([row.key.uid], folder)
        self.journal.mark_poison(row.id, reason, folder, self.clock())
        self._progress()
        decision_log.info("uid=%s uidvalidity=%s message_id=%s poison: %s folder=%s", row.key.uid,
                          row.key.uidvalidity, row.message_id, reason, folder)
        out = Outcome(row.key.uid, row.message_id, state="poison", note=reason, folder=folder, subject=subject)
        self.outcomes.append(out)
        return out


#: what of a message's header is read in the event loop when it could not be parsed (poison)
HEADER_PEEK_BYTES = 64_000


def header_subject(raw: bytes) -> str:
    """The Subject of a message that could not be read (for the log and the outcome), from at most
    ``HEADER_PEEK_BYTES`` of its header, card numbers masked; "" when there is none."""
    head = raw[:HEADER_PEEK_BYTES]
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = head.find(sep)
        if i >= 0:
            head = head[:i]
            break
    try:
        subject = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head).get("Subject", "")
        return mask_card_numbers(" ".join(str(subject).split()))[:300]
    except Exception:  # a header too broken even for this: no subject
        return ""


def content_digest(raw: bytes, msg: ParsedMessage) -> str:
    """What makes two copies of a message "the same" beyond the Message-ID: From, Date, Subject and
    the body bytes. A copy delivered twice (other Received lines) or moved back into the inbox has
    the same digest; another message that reuses the Message-ID has not."""
    i = raw.find(b"\r\n\r\n")
    j = raw.find(b"\n\n")
    cut = min(x for x in (i, j, len(raw)) if x >= 0)
    h = hashlib.sha256()
    for value in (msg.header("From") or "", msg.header("Date") or "", msg.subject or ""):
        h.update(value.encode("utf-8", "surrogateescape") + b"\0")
    h.update(raw[cut:].lstrip(b"\r\n"))
    return h.hexdigest()


#: UIDs whose sizes are asked in one FETCH when planning batches
SIZE_QUERY = 1000

#: a backlog's sent messages are flagged, moved and marked done this many at a time (see
#: Executor.finish_many): a MOVE costs the server about the same for 1 UID as for 50
FILE_EVERY = 500


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
