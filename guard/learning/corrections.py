"""Learning from the coordinator's corrections: Guard/NotScam and Guard/Scam.

The coordinator's interface is their mail client: they drag a message guard got
wrong into one of two folders, and guard notices when it next checks them (after
every wake-up of the daemon, and at least every ``learning.poll_seconds``; the
IDLE connection stays on the inbox and the two folders are looked at in
between -- simple, and robust to reconnects).

* **Guard/NotScam** (a false positive): the label is recorded, the sender's
  address (or, with ``learning.list_by = "domain"``, its domain -- never a
  free-mail or official domain) goes on the allowlist, and the message is
  *released*: routed as an inquiry (the policy's inquiry sends: the forward to
  the coordinator and the acknowledgement, which passes the reply gate as every
  reply does), then moved to Guard/Routed. The sends go through the journal's
  outbox, so a crash neither loses nor repeats them.
* **Guard/Scam** (a missed scam): the label is recorded and the sender goes on
  the denylist, so later mail from it is quarantined. The message stays there.

The allow- and denylist entries live in the journal and are merged into the
rule context's ``allowlist`` / ``denylist`` at classification time
(:class:`LiveListsClassifier`): no restart needed.

**Labelled copies.** Each labelled message's raw bytes are kept for training in
``<journal dir>/labelled/scam/*.eml`` and ``labelled/genuine/*.eml`` (or
``learning.labelled_dir``); ``guard train`` includes them. This is the one
place guard stores message bodies, on purpose: the coordinator chose these
messages as training examples. Delete a file to forget it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Callable

from guard.digest import records as dj
from guard.mail import domains
from guard.errors import PermanentIOError, TransientIOError
from guard.daemon.journal import Journal, Key, Outgoing
from guard.daemon.mailbox import Fetched, ImapMailbox, fetched_from
from guard.mail.message import parse
from guard.respond.prepare import prepare, reply_recipient
from guard.respond.policy import Action, Plan, decide

log = logging.getLogger("guard.learning.corrections")

LABEL_OF_FOLDER = {"not_scam": "genuine", "scam": "scam"}


# -- the classifier sees the journal's lists ------------------------------------------------------


class LiveListsClassifier:
    """A :class:`~guard.classification.classify.Classifier` whose ``allowlist`` and ``denylist`` also hold the
    journal's entries; rebuilt whenever those change (checked at each classification)."""

    def __init__(self, base, journal: Journal) -> None:
        self.base = base
        self.journal = journal
        self._version = None
        self._current = base

    def current(self):
        version = dj.lists_version(self.journal)
        if version != self._version:
            ctx = self.base.context
            lists = dict(ctx.lists)
            for name in dj.LISTS:
                lists[name] = lists.get(name, frozenset()) | dj.list_entries(self.journal, name)
            self._current = dataclasses.replace(self.base, context=dataclasses.replace(ctx, lists=lists))
            self._version = version
        return self._current

    def classify(self, msg, **kw):
        try:
            clf = self.current()
        except sqlite3.ProgrammingError:  # called from a worker thread (warm-up): the lists as last read
            clf = self._current
        return clf.classify(msg, **kw)

    def __getattr__(self, name):
        return getattr(self.base, name)


# -- what to list -------------------------------------------------------------------------------


def list_entry(sender: str, list_by: str, *, never_domains: frozenset[str]) -> str | None:
    """The allow/deny entry for a sender address: the address, or its registrable domain when
    ``list_by`` is "domain" and that domain is not a free-mail or official one. Pure."""
    sender = (sender or "").strip().lower()
    if "@" not in sender:
        return None
    if list_by == "domain":
        dom = domains.registrable(sender.rpartition("@")[2]) or sender.rpartition("@")[2]
        if dom and dom not in never_domains:
            return dom
    return sender


def store_labelled(root: Path, label: str, raw: bytes) -> Path:
    """Write the raw message to ``root/<label>/<sha256>.eml`` (atomically); drop a copy under the other label."""
    name = hashlib.sha256(raw).hexdigest()[:32] + ".eml"
    other = "scam" if label == "genuine" else "genuine"
    (root / other / name).unlink(missing_ok=True)
    d = root / label
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    if not path.exists():
        tmp = d / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(raw)
        os.replace(tmp, path)
    return path


def labelled_examples(root: Path) -> list[tuple[bytes, str]]:
    """(raw, label) for ``guard train``'s extra_labelled: scam -> "scam", genuine -> "ham"."""
    out = []
    for label, category in (("scam", "scam"), ("genuine", "ham")):
        d = root / label
        if d.is_dir():
            out.extend((p.read_bytes(), category) for p in sorted(d.glob("*.eml")))
    return out


def labelled_dir(settings) -> Path:
    return settings.learning.labelled_dir or Path(settings.daemon.journal).parent / "labelled"


# -- IMAP access to the correction folders ------------------------------------------------------


class ImapFolders:
    """Reading and moving messages in folders other than the watched one, on the daemon's connection
    (the watched mailbox is selected again afterwards)."""

    def __init__(self, mb: ImapMailbox) -> None:
        self.mb = mb

    async def scan(self, folder: str, want: Callable[[int, int], bool]) -> tuple[int, list[Fetched]]:
        """(UIDVALIDITY, the messages of ``folder`` for which ``want(uidvalidity, uid)`` holds)."""
        mb = self.mb
        name = mb.folder_name(folder)
        limit = mb.s.max_message_bytes
        async with mb._lock:
            client = mb._client
            info = await mb._call(lambda: client.select_folder(name, readonly=True))
            try:
                uidvalidity = int(info[b"UIDVALIDITY"])
                uids = sorted(await mb._call(lambda: client.search(["ALL"])))
                todo = [u for u in uids if want(uidvalidity, u)]
                out = []
                if todo:
                    data = await mb._call(lambda: client.fetch(todo, ["RFC822.SIZE", "INTERNALDATE",
                                                                      f"BODY.PEEK[]<0.{limit}>"]))
                    by_uid = fetched_from(data, todo)
                    out = [by_uid[u] for u in todo if u in by_uid]
            finally:
                if mb._client is not None:
                    await mb._call(lambda: client.select_folder(mb.mailbox))
        return uidvalidity, out

    async def move(self, folder: str, uid: int, target: str) -> bool:
        mb = self.mb
        src, dst = mb.folder_name(folder), mb.folder_name(target)
        async with mb._lock:
            client = mb._client
            await mb._call(lambda: client.select_folder(src))
            try:
                if uid not in await mb._call(lambda: client.search(["UID", str(uid)])):
                    return False
                await mb.move_selected([uid], dst)
            finally:
                if mb._client is not None:
                    await mb._call(lambda: client.select_folder(mb.mailbox))
        return True


# -- the watcher ---------------------------------------------------------------------------------


class CorrectionWatcher:
    def __init__(self, settings, *, journal: Journal, folders, executor, clock) -> None:
        self.settings = settings
        self.journal = journal
        self.folders = folders  # ImapFolders (or a test double with scan/move)
        self.executor = executor
        self.clock = clock
        self.root = labelled_dir(settings)
        self.last_check: datetime | None = None
        ctx = getattr(executor.classifier, "context", None)
        self.never = frozenset(settings.official_domains()) | (ctx.lists.get("freemail", frozenset()) if ctx else frozenset())

    @property
    def account(self) -> str:
        return self.executor.mailbox.account

    def seconds_until_due(self) -> float:
        if self.last_check is None:
            return 0.0
        left = self.settings.learning.poll_seconds - (self.clock() - self.last_check).total_seconds()
        return max(0.0, left)

    async def check(self) -> int:
        """Look at both folders; handle each new correction. Returns how many were handled."""
        self.last_check = self.clock()
        n = 0
        names = self.settings.daemon.folders
        for key in ("not_scam", "scam"):
            folder = names.resolve(key)
            if not folder:
                continue

            def want(uidvalidity: int, uid: int, folder=folder) -> bool:
                return dj.label_seen(self.journal, self.account, folder, uidvalidity, uid) != "done"

            uidvalidity, fetched = await self.folders.scan(folder, want)
            for f in fetched:
                if self.executor.stop.is_set():
                    return n
                try:
                    if key == "scam":
                        self._scam(folder, uidvalidity, f)
                    else:
                        await self._not_scam(folder, uidvalidity, f)
                    n += 1
                except (TransientIOError, PermanentIOError):
                    raise
                except Exception:
                    log.exception("correction in %s UID %s could not be handled", folder, f.uid)
        return n

    def _entry(self, sender: str) -> str | None:
        return list_entry(sender, self.settings.learning.list_by, never_domains=self.never)

    def _scam(self, folder: str, uidvalidity: int, f: Fetched) -> None:
        now = self.clock()
        msg = parse(f.raw)
        sender = msg.from_.addr.lower() if msg.from_ and msg.from_.addr else ""
        entry = self._entry(sender)
        path = store_labelled(self.root, "scam", f.raw)
        if entry:
            dj.add_to_list(self.journal, "denylist", entry, now, source=f"Guard/Scam {msg.message_id or ''}")
        original = self.journal.by_message_id(self.account, msg.message_id) if msg.message_id else None
        dj.record_label(self.journal, account=self.account, folder=folder, uidvalidity=uidvalidity, uid=f.uid,
                        message_id=msg.message_id, sender=sender, label="scam", entry=entry, path=str(path),
                        message=original.id if original else None, state="done", now=now)
        if original is not None:
            dj.queue_correction(self.journal, original.id, "scam", now)
        log.info("correction: %s UID %s marked as scam; denylisted %s", folder, f.uid, entry or "(no sender)")

    async def _not_scam(self, folder: str, uidvalidity: int, f: Fetched) -> None:
        ex = self.executor
        msg = parse(f.raw)
        sender = msg.from_.addr.lower() if msg.from_ and msg.from_.addr else ""
        key = Key(self.account, folder, uidvalidity, f.uid)
        row = self.journal.get(key)
        if row is None or row.state == "new":
            now = self.clock()
            entry = self._entry(sender)
            path = store_labelled(self.root, "genuine", f.raw)
            if entry:
                dj.add_to_list(self.journal, "allowlist", entry, now, source=f"Guard/NotScam {msg.message_id or ''}")
            row = self.journal.begin(key, message_id=msg.message_id, arrived=f.arrived, now=now)
            dj.record_facts(self.journal, row.id, msg)
            verdict = ex.classifier.classify(msg)  # with the new allowlist entry
            as_inquiry = dataclasses.replace(verdict, category="inquiry")
            sends = decide(ex.policy, as_inquiry).sends
            plan = Plan(f"released:{decide(ex.policy, as_inquiry).row}", (*sends, Action("move", folder="routed")))
            recipient = reply_recipient(msg)
            histories = ex.reply_histories(recipient, plan, now, self.account, ex.mailbox.mailbox)
            decision = prepare(f.raw, msg, as_inquiry, plan, env=ex.env, now=now, arrived=f.arrived,
                               histories=histories, breaker_alert_due=False, token=secrets.token_hex(8))

            self.journal.record_decision(
                row.id, category="inquiry", verdict=as_inquiry.to_dict(), plan=decision.plan.describe(),
                folder=decision.folder, flag=False, suppressed=[list(s) for s in decision.suppressed],
                outgoing=[Outgoing(o.kind, o.template, o.recipient, o.envelope_from, o.message_id, o.raw,
                                   history_as=o.headers.get("shadow_for") or o.recipient) for o in decision.outgoing],
                mode=ex.mode, now=now, note="released by the coordinator from Guard/NotScam")
            dj.record_label(self.journal, account=self.account, folder=folder, uidvalidity=uidvalidity, uid=f.uid,
                            message_id=msg.message_id, sender=sender, label="genuine", entry=entry, path=str(path),
                            message=row.id, state="pending", now=now)
            dj.queue_correction(self.journal, row.id, "not_scam", now)
            log.info("correction: %s UID %s marked as not a scam; allowlisted %s; releasing it", folder, f.uid,
                     entry or "(no sender)")
            row = self.journal.by_id(row.id)
        if row.state == "decided":
            pending, _ = await ex.send_outbox(row)
            if pending:
                return  # a send waits for a retry: the message stays in the folder until then
            if not await self.folders.move(folder, f.uid, row.folder or self.settings.daemon.folders.routed):
                log.info("%s UID %s was gone before the move", folder, f.uid)
            self.journal.mark_done(row.id, self.clock())
        dj.record_label(self.journal, account=self.account, folder=folder, uidvalidity=uidvalidity, uid=f.uid,
                        message_id=msg.message_id, sender=sender, label="genuine", entry=None, path=None,
                        message=row.id, state="done", now=self.clock())

