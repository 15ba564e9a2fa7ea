"""Several watched mailboxes in one process, signals, reload and the health endpoint.

:class:`Supervisor` runs one :class:`~guard.daemon.service.Daemon` (one IMAP connection, one watcher
task) per account: the single ``[imap]`` section, or each ``[[accounts]]`` entry. The accounts
share the journal (rows are keyed by account) and the classifier, nothing else: a wrong
password, an unreachable server or even a bug in one watcher is logged and retried for that
account alone while the others carry on.

Signals: SIGTERM/SIGINT stop every watcher after the message it is processing; SIGHUP reloads
the configuration file's rules, events, policy and templates (``reloader``), validates all of
it, and swaps it in between two messages, or keeps the running set and logs why when anything
is invalid.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Callable

from guard.daemon import health as health_module
from guard.daemon.service import Daemon, build_env, folder_names, load_policy_and_templates
from guard.errors import ConfigError
from guard.daemon.health import (Health, HealthServer, ObservedMailbox, instrument, stale_seconds_for,
                                 stuck_seconds_for)
from guard.daemon.journal import Journal
from guard.daemon.mailbox import ImapMailbox
from guard.settings import GuardSettings

log = logging.getLogger("guard.daemon.supervisor")

#: () -> (new settings, new classifier); raises when the new configuration is invalid
Reloader = Callable[[], tuple[GuardSettings, object]]


def no_startup_signal() -> int | None:
    return None


#: the SIGTERM/SIGINT ``guard run`` received during start-up, before :meth:`Supervisor.main`
#: installed its handlers (set by guard/cli/daemon.py; None: none)
startup_signal: Callable[[], int | None] = no_startup_signal


def account_name(settings: GuardSettings) -> str:
    return settings.daemon.account or (settings.imap.username if settings.imap else "?")


def per_account(settings: GuardSettings) -> list[GuardSettings]:
    """One settings view per watched mailbox (the single [imap] form is one account)."""
    if not settings.accounts:
        return [settings]
    out = []
    for a in settings.accounts:
        daemon = settings.daemon.model_copy(update={"account": a.name or a.imap.username})
        out.append(settings.model_copy(update={"imap": a.imap, "smtp": a.smtp or settings.smtp, "daemon": daemon,
                                               "accounts": []}))
    return out


@dataclass
class Watcher:
    name: str
    settings: GuardSettings
    daemon: Daemon


class Supervisor:
    def __init__(self, settings: GuardSettings, classifier, *, mode: str = "live", once: bool = False,
                 reloader: Reloader | None = None, health: Health | None = None,
                 mailbox_factory: Callable[[GuardSettings], object] | None = None, mailer_factory=None,
                 journal: Journal | None = None, restart_delay: float = 5.0) -> None:
        if settings.imap is None and not settings.accounts and mailbox_factory is None:
            raise ConfigError("guard run needs an [imap] section (or [[accounts]]) in the configuration")
        self.settings = settings
        self.mode = mode
        self.once = once
        self.reloader = reloader
        self.restart_delay = restart_delay
        self.stopping = asyncio.Event()
        self.health = health or Health(stale_seconds=stale_seconds_for(settings),
                                       stuck_seconds=stuck_seconds_for(settings))
        health_module.CURRENT = self.health  # guard.daemon.health.auth_problems() for the digest
        if journal is None:
            journal = Journal(":memory:" if mode == "dry-run" else settings.daemon.journal)
        self.journal = journal
        self.watchers: list[Watcher] = []
        try:
            self._build(settings, classifier, mode, once, mailbox_factory, mailer_factory)
        except BaseException:
            journal.close()
            raise
        self.server: HealthServer | None = None
        self.reloads = 0
        self.reload_failures = 0

    def _build(self, settings, classifier, mode, once, mailbox_factory, mailer_factory) -> None:
        journal = self.journal
        for s in per_account(settings):
            name = account_name(s)
            if mailbox_factory is not None:
                inner = mailbox_factory(s)
            else:
                inner = ImapMailbox(s.imap, account=name, folders=folder_names(s))
            mailer = mailer_factory(s) if mailer_factory is not None else None
            d = Daemon(s, classifier=classifier, mode=mode, once=once, mailbox=ObservedMailbox(inner, self.health),
                       mailer=mailer, journal=journal)
            instrument(d.executor, self.health.registry, self.health)
            self.watchers.append(Watcher(name, s, d))

    # -- signals -------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGTERM: self.on_stop, signal.SIGINT: self.on_stop, signal.SIGHUP: self.on_reload}
        for sig, fn in handlers.items():
            try:
                loop.add_signal_handler(sig, fn, sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
                pass

    def on_stop(self, sig=signal.SIGTERM) -> None:
        if not self.stopping.is_set():
            log.info("%s received: finishing the current message, then exiting", signal.Signals(sig).name)
        self.stopping.set()
        for w in self.watchers:
            w.daemon.stop.set()

    def on_reload(self, sig=signal.SIGHUP) -> None:
        log.info("SIGHUP received: reloading rules, events, policy and templates")
        asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> bool:
        """Load and check everything new; swap it in only when all of it is valid."""
        if self.reloader is None:
            log.warning("reload: no configuration to reload from; nothing changed")
            return False
        try:
            new_settings, classifier = await asyncio.to_thread(self.reloader)
            views = {account_name(s): s for s in per_account(new_settings)}
            prepared = []
            for w in self.watchers:
                s = views.get(w.name)
                if s is None:
                    raise ValueError(f"account {w.name!r} is gone from the configuration (accounts need a restart)")
                policy, renderer = await asyncio.to_thread(load_policy_and_templates, s)
                prepared.append((w, s, policy, build_env(s, renderer, self.mode)))
        except Exception as exc:
            self.reload_failures += 1
            self.health.registry.inc("guard_errors_total", account="*", kind="reload")
            log.error("reload failed, keeping the running configuration: %s", str(exc).replace("\n", "; ")[:2000])
            return False
        # one synchronous swap on the event loop: no message sees half of the old and half of the new set
        for w, s, policy, env in prepared:
            ex = w.daemon.executor
            ex.classifier, ex.policy, ex.env = classifier, policy, env
            w.settings = s
        self.reloads += 1
        log.info("reload done: %s account(s) use the new rules, events, policy and templates", len(prepared))
        return True

    # -- running -------------------------------------------------------------------------
    async def _watch(self, w: Watcher) -> int:
        """One account's watcher; anything unexpected is logged and the watcher restarted (alone)."""
        while True:
            try:
                return await w.daemon.run()
            except ConfigError:
                raise  # not a watcher's bad luck: guard must not run like this (the message says why)
            except Exception:
                log.exception("account %s: watcher failed; restarting it in %.0f s", w.name, self.restart_delay)
                self.health.disconnected(w.name, "watcher failed")
                self.health.registry.inc("guard_errors_total", account=w.name, kind="watcher")
                if self.once:
                    return 1
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=self.restart_delay)
                    return 0
                except asyncio.TimeoutError:
                    pass

    async def run(self) -> int:
        hs = self.settings.health
        if hs.enabled and not self.once:
            self.server = HealthServer(self.health, hs.host, hs.port)
            await self.server.start()
        try:
            results = await asyncio.gather(*(self._watch(w) for w in self.watchers))
            return max(results, default=0)
        finally:
            if self.server is not None:
                await self.server.stop()

    async def main(self) -> int:
        self.install_signal_handlers()
        early = startup_signal()
        if early is not None:  # SIGTERM while the watchers were being built: stop before any mail
            log.info("%s received during start-up: start-up abandoned, no mail processed", signal.Signals(early).name)
            self.journal.close()
            return 0
        names = ", ".join(f"{w.settings.imap.mailbox} of {w.settings.imap.describe()}" for w in self.watchers
                          if w.settings.imap is not None)
        log.info("guard %s: watching %s (%s)", "once" if self.once else "daemon", names or "?", self.mode)
        try:
            return await self.run()
        finally:
            self.journal.close()


def run(settings: GuardSettings, classifier, *, mode: str = "live", once: bool = False, reloader=None) -> int:
    """One watcher per account ([imap] or [[accounts]]), SIGHUP reload and /healthz."""
    async def main() -> int:
        return await Supervisor(settings, classifier, mode=mode, once=once, reloader=reloader).main()

    return asyncio.run(main())
