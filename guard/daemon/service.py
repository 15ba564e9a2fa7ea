"""``guard run``: the asyncio supervisor around the executor.

    open mailbox ──► reconcile (resume + UID SEARCH) ──► IDLE / poll ──┐
         ▲                ▲                                            │ wake-up, timeout,
         │                └────────────────────────────────────────────┘ or an outbox retry due
         └── reconnect with capped exponential backoff + jitter on any connection failure

``--once`` opens, reconciles and exits. SIGTERM and SIGINT set the stop event:
the message being processed is finished, then guard logs out and exits.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from guard.errors import ConfigError, PermanentIOError, TransientIOError
from guard.daemon.budget import ProcessAnalyser
from guard.daemon.executor import Executor, RetryPolicy, utc_now
from guard.daemon.journal import Journal
from guard.daemon.mailbox import ImapMailbox, Mailbox
from guard.daemon.mailer import Mailer, NullMailer, SmtpPool
from guard.paths import shipped
from guard.respond.prepare import Env, gate_config
from guard.respond.policy import Policy, load_policy
from guard.respond.render import Identity, Renderer, TemplateCodeCache
from guard.settings import GuardSettings

log = logging.getLogger("guard.daemon.service")


FOLDER_KEYS_CREATED = ("quarantine", "review", "routed", "automated", "not_scam", "scam", "other")


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    cap: float = 300.0

    def delay(self, attempt: int, rnd: float) -> float:
        """attempt 1, 2, 3 ... -> initial * 2^(attempt-1), capped, with full jitter on the upper half."""
        base = min(self.cap, self.initial * (2 ** max(0, attempt - 1)))
        return base / 2 + base / 2 * rnd


def load_policy_and_templates(settings: GuardSettings) -> tuple[Policy, Renderer]:
    """The decision table and the templates, checked against each other (start-up). The compiled
    templates are kept in guard's cache directory between starts (:class:`TemplateCodeCache`)."""
    from guard.cache import cache_dir

    d = settings.daemon
    renderer = Renderer(d.templates_dir or shipped("templates"), d.language, fallback=d.reply_fallback(),
                        coordinator_language=d.coordinator_lang(),
                        bytecode_cache=TemplateCodeCache.under(cache_dir()))
    renderer.check()
    policy = load_policy(d.policy_file or shipped("rules") / "policy.toml", templates=renderer.templates())
    return policy, renderer


def build_env(settings: GuardSettings, renderer: Renderer, mode: str) -> Env:
    null_sender = settings.smtp is None or settings.smtp.null_sender_for_replies
    return Env(renderer=renderer, ident=Identity.from_settings(settings), gate=gate_config(settings),
               folders=settings.daemon.folders, mode=mode,
               reply_envelope_from="" if null_sender else settings.institute.events_address)


def folder_names(settings: GuardSettings) -> list[str]:
    f = settings.daemon.folders
    return [n for n in (f.resolve(k) for k in FOLDER_KEYS_CREATED) if n]


class Daemon:
    def __init__(self, settings: GuardSettings, *, classifier, mode: str = "live", once: bool = False,
                 mailbox: Mailbox | None = None, mailer: Mailer | None = None, journal: Journal | None = None,
                 clock: Callable[[], datetime] = utc_now, rng: Callable[[], float] = random.random) -> None:
        if settings.imap is None and mailbox is None:
            raise ConfigError("guard run needs an [imap] section in the configuration")
        if settings.smtp is None and mailer is None and mode != "dry-run":
            raise ConfigError("guard run needs an [smtp] section in the configuration (or --dry-run)")
        self.settings = settings
        self.mode = mode
        self.once = once
        self.clock = clock
        self.rng = rng
        self.stop = asyncio.Event()
        policy, renderer = load_policy_and_templates(settings)
        d = settings.daemon
        if journal is None:
            # dry-run never touches the real journal: a later live run must still see every message as new
            journal = Journal(":memory:" if mode == "dry-run" else d.journal)
        self.journal = journal
        if mailbox is None:
            mailbox = ImapMailbox(settings.imap, account=d.account, folders=folder_names(settings))
        self.mailbox = mailbox
        if mailer is None:
            mailer = NullMailer() if mode == "dry-run" else SmtpPool(settings.smtp, connections=settings.smtp.connections)
        self.mailer = mailer
        smtp = settings.smtp
        retry = RetryPolicy(smtp.retry_initial_seconds, smtp.retry_max_seconds, smtp.max_attempts) if smtp else RetryPolicy()
        self.executor = Executor(journal=journal, mailbox=mailbox, mailer=mailer, classifier=classifier, policy=policy,
                                 env=build_env(settings, renderer, mode), max_attempts=d.max_attempts, retry=retry,
                                 clock=clock, rng=rng, stop=self.stop, batch_size=d.batch_size,
                                 batch_bytes=d.batch_bytes, analyser=ProcessAnalyser(d.message_time_budget_seconds),
                                 outbox_retention_days=d.outbox_retention_days)
        imap = settings.imap
        self.backoff = Backoff(imap.reconnect_initial_seconds, imap.reconnect_max_seconds) if imap else Backoff()
        self.idle_seconds = imap.idle_seconds if imap else 60.0
        self.connected_once = asyncio.Event()
        # the digest, learning from corrections, the optional retrain (guard/learning/watchers.py)
        from guard.learning.watchers import Learning

        self.learning = Learning(self, renderer)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
                pass

    def _on_signal(self, sig) -> None:
        if not self.stop.is_set():
            log.info("%s received: finishing the current message, then exiting", signal.Signals(sig).name)
        self.stop.set()

    def warm_up(self) -> None:
        """Parse and classify one bundled sample so the first real message is not slowed by lazy loading."""
        from guard.mail.message import parse
        from guard.paths import samples_dir

        for sample in sorted(samples_dir().glob("*.eml"))[:1]:
            self.executor.classifier.classify(parse(sample.read_bytes()))

    async def run(self) -> int:
        """Returns the exit status: 0, or 1 when ``--once`` could not reach the server."""
        await asyncio.to_thread(self.warm_up)
        attempt = 0
        once_attempts = 3
        try:
            while not self.stop.is_set():
                try:
                    uidvalidity = await self.mailbox.open()
                    self.check_new_journal()
                    self.executor.opened(uidvalidity)
                    self.connected_once.set()
                    n = await self.executor.reconcile()
                    await self._tick()
                    if attempt:
                        log.info("reconnected after %s attempt(s)", attempt)
                    attempt = 0
                    if self.once:
                        log.info("--once: %s message(s) handled", n)
                        return 0
                    await self._watch()
                except (TransientIOError, PermanentIOError) as exc:
                    attempt += 1
                    await self.mailbox.close()
                    if self.once and (isinstance(exc, PermanentIOError) or attempt >= once_attempts):
                        log.error("%s", exc)
                        return 1
                    delay = self.backoff.delay(attempt, self.rng())
                    if isinstance(exc, PermanentIOError):
                        delay = max(delay, min(self.backoff.cap, 60.0))
                    log.warning("%s; reconnecting in %.1f s (attempt %s)", exc, delay, attempt)
                    try:
                        await asyncio.wait_for(self.stop.wait(), timeout=delay)
                    except asyncio.TimeoutError:
                        pass
            return 0
        finally:
            await self.executor.analyser.close()
            await self.executor.mailer.close()
            await self.mailbox.close()
            counts = self.journal.counts()
            log.info("stopped; journal: %s", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "empty")

    def check_new_journal(self) -> None:
        """An empty journal beside guard's folders on the server (the journal was lost, or another
        path configured) is refused unless asked for: it would answer old mail again."""
        if self.mode == "dry-run" or self.settings.daemon.allow_new_journal or not self.journal.is_empty():
            return
        existing = list(getattr(self.mailbox, "preexisting_folders", ()) or ())
        if existing:
            raise ConfigError(
                f"{self.journal.path}: the journal is new or empty, but the IMAP account "
                f"{self.mailbox.account} already has guard's folders ({', '.join(existing)}): guard ran "
                "here before with another journal. Restore that journal (daemon.journal), or start a new "
                "one on purpose with `guard run --new-journal` (or daemon.allow_new_journal = true); "
                "mail already handled may then be handled again")

    async def _watch(self) -> None:
        """IDLE (or poll) and reconcile after every wake-up, until stopped or the connection fails."""
        while not self.stop.is_set():
            timeout = self.idle_seconds
            due = self.journal.next_retry()
            if due is not None:
                timeout = max(0.05, min(timeout, (due - self.clock()).total_seconds()))
            timeout = self.learning.timeout(timeout)
            log.debug("waiting (up to %.0f s)", timeout)
            why = await self.mailbox.wait(timeout, self.stop)
            if why == "stopped":
                return
            await self.executor.reconcile()
            await self._tick()

    async def _tick(self) -> None:
        """Corrections and the digest; then QUIT the SMTP connection kept for the batch."""
        try:
            await self.learning.tick()
        finally:
            await self.executor.mailer.close()
