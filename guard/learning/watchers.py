"""What the daemon does between reconciliations besides IDLE: corrections, the digest, the retrain.

Attached to each :class:`~guard.daemon.service.Daemon` (one per watched account):

* the classifier is wrapped so the journal's allow/deny entries reach the rules
  (re-wrapped after a SIGHUP reload swapped the classifier);
* Guard/NotScam and Guard/Scam of the account are checked (guard/learning/corrections.py);
* the digest is sent when due (guard/digest/send.py). With several accounts
  sharing one journal, one digest covers them all: sends are serialised per
  journal, and the second finds nothing due;
* the optional scheduled retrain (guard/learning/retrain.py; off by default).

Nothing here runs in ``--dry-run``. Connection errors propagate (the daemon
reconnects); anything else is logged and the daemon carries on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref

from guard.learning.corrections import CorrectionWatcher, ImapFolders, LiveListsClassifier
from guard.digest.send import DigestService
from guard.errors import PermanentIOError, TransientIOError
from guard.daemon.mailbox import ImapMailbox

log = logging.getLogger("guard.learning.watchers")

_DIGEST_LOCKS: "weakref.WeakKeyDictionary[object, asyncio.Lock]" = weakref.WeakKeyDictionary()


def _imap_of(mailbox) -> ImapMailbox | None:
    inner = mailbox
    for _ in range(5):
        if isinstance(inner, ImapMailbox):
            return inner
        inner = getattr(inner, "_inner", None)
        if inner is None:
            return None
    return None


class Learning:
    def __init__(self, daemon, renderer) -> None:
        self.daemon = daemon
        s = daemon.settings
        self.active = daemon.mode != "dry-run"
        ex = daemon.executor
        self.wrap()
        self.digest = DigestService(s, daemon.journal, daemon.mailer, renderer, clock=daemon.clock, mode=daemon.mode)
        if self.active and s.digest.enabled:
            self.digest.check()
        imap = _imap_of(daemon.mailbox)
        self.corrections = None
        if self.active and s.learning.enabled and imap is not None:
            self.corrections = CorrectionWatcher(s, journal=daemon.journal, folders=ImapFolders(imap), executor=ex,
                                                 clock=daemon.clock)
        self.retrain = None
        if self.active and s.learning.retrain_hours > 0:
            from guard.learning.retrain import RetrainScheduler

            self.retrain = RetrainScheduler(s, daemon.journal, executor=ex, clock=daemon.clock)

    def wrap(self) -> None:
        ex = self.daemon.executor
        if not isinstance(ex.classifier, LiveListsClassifier) and dataclasses.is_dataclass(getattr(ex.classifier, "context", None)):
            ex.classifier = LiveListsClassifier(ex.classifier, self.daemon.journal)

    def timeout(self, timeout: float) -> float:
        """The IDLE timeout, shortened so corrections and the digest are looked at in time."""
        if not self.active:
            return timeout
        for left in (self.corrections.seconds_until_due() if self.corrections else None,
                     self.digest.seconds_until_due()):
            if left is not None:
                timeout = min(timeout, max(0.05, left))
        return timeout

    async def tick(self) -> None:
        self.wrap()
        if not self.active:
            return
        try:
            if self.corrections is not None and self.corrections.seconds_until_due() <= 0:
                await self.corrections.check()
            lock = _DIGEST_LOCKS.setdefault(self.daemon.journal, asyncio.Lock())
            async with lock:
                await self.digest.maybe_send()
            if self.retrain is not None:
                await self.retrain.maybe_run()
        except (TransientIOError, PermanentIOError):
            raise
        except Exception:
            log.exception("corrections or digest failed; carrying on")
