"""guard/daemon/supervisor.py: SIGHUP reload (kept when invalid), SIGTERM finishes the current message,
several accounts with one failing, and the health/metrics hooks. Fake IO, real signals."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from datetime import datetime, timezone

import pytest
from daemon_fakes import FakeMailbox, FakeMailer, PermanentIOError, StubClassifier, mail

from guard.daemon.supervisor import Supervisor, per_account
from guard.daemon.health import Health
from guard.daemon.journal import Journal
from guard.daemon.metrics import Registry
from guard.paths import shipped
from guard.settings import load_settings


class SlowMailbox(FakeMailbox):
    """Waits like IMAP IDLE (until stopped or a short timeout) and fetches slowly."""

    fetch_delay: float = 0.0
    fetching: asyncio.Event | None = None

    async def wait(self, timeout, stop):
        try:
            await asyncio.wait_for(stop.wait(), timeout=min(timeout, 0.05))
            return "stopped"
        except asyncio.TimeoutError:
            return "timeout"

    async def fetch_many(self, uids):
        if self.fetching is not None:
            self.fetching.set()
        if self.fetch_delay:
            await asyncio.sleep(self.fetch_delay)
        return await super().fetch_many(uids)


class BrokenMailbox(SlowMailbox):
    async def open(self):
        raise PermanentIOError("IMAP login as broken@crm.cat refused: [AUTHENTICATIONFAILED]")


def now():
    return datetime.now(timezone.utc)


@pytest.fixture
def policy_copy(tmp_path):
    p = tmp_path / "policy.toml"
    shutil.copyfile(shipped("rules") / "policy.toml", p)
    return p


def supervisor(settings, mailboxes, *, reloader=None, once=False, registry=None):
    boxes = dict(mailboxes)
    health = Health(stale_seconds=60, registry=registry or Registry())
    return Supervisor(settings, StubClassifier(), mode="live", once=once, reloader=reloader, health=health,
                      mailbox_factory=lambda s: boxes[s.daemon.account or s.imap.username],
                      mailer_factory=lambda s: FakeMailer(), journal=Journal(":memory:"), restart_delay=0.05)


def test_reload_swaps_in_a_valid_set_and_keeps_the_old_one_when_invalid(policy_copy, caplog):
    settings = load_settings(daemon={"account": "events@crm.cat", "policy_file": str(policy_copy)})
    sup = supervisor(settings, {"events@crm.cat": SlowMailbox()},
                     reloader=lambda: (load_settings(daemon={"account": "events@crm.cat",
                                                             "policy_file": str(policy_copy)}), StubClassifier()))
    ex = sup.watchers[0].daemon.executor
    old_policy, old_env, old_classifier = ex.policy, ex.env, ex.classifier

    # an invalid policy: TOML syntax error
    policy_copy.write_text(policy_copy.read_text() + "\n[[row]\n")
    with caplog.at_level(logging.ERROR, logger="guard.daemon.supervisor"):
        assert asyncio.run(sup.reload()) is False
    assert (ex.policy, ex.env, ex.classifier) == (old_policy, old_env, old_classifier)
    assert "reload failed, keeping the running configuration" in caplog.text
    assert "not valid TOML" in caplog.text

    # a policy naming a template that does not exist: also refused, as a whole
    policy_copy.write_text(policy_copy.read_text().replace("\n[[row]\n", "\n").replace(
        'template = "report_paid"', 'template = "no_such_template"'))
    assert asyncio.run(sup.reload()) is False
    assert ex.policy is old_policy

    # fixed: swapped in, every piece at once
    shutil.copyfile(shipped("rules") / "policy.toml", policy_copy)
    assert asyncio.run(sup.reload()) is True
    assert ex.policy is not old_policy and ex.env is not old_env and ex.classifier is not old_classifier
    assert sup.reloads == 1 and sup.reload_failures == 2


def test_reload_refuses_invalid_events_in_the_configuration(tmp_path, policy_copy):
    settings = load_settings(daemon={"account": "events@crm.cat"})

    def reloader():  # an event ending before it starts: the whole file is refused
        return load_settings(events=[{"id": "x", "name": "Broken", "start": "2026-05-02", "end": "2026-05-01"}],
                             daemon={"account": "events@crm.cat"}), StubClassifier()

    sup = supervisor(settings, {"events@crm.cat": SlowMailbox()}, reloader=reloader)
    ex = sup.watchers[0].daemon.executor
    before = ex.env
    assert asyncio.run(sup.reload()) is False
    assert ex.env is before


def test_sighup_reloads_and_sigterm_finishes_the_current_message(policy_copy, caplog):
    caplog.set_level(logging.INFO)
    settings = load_settings(daemon={"account": "events@crm.cat", "policy_file": str(policy_copy)})
    mb = SlowMailbox()
    mb.fetch_delay = 0.3
    calls = []

    def reloader():
        calls.append(1)
        return load_settings(daemon={"account": "events@crm.cat", "policy_file": str(policy_copy)}), StubClassifier()

    sup = supervisor(settings, {"events@crm.cat": mb}, reloader=reloader)

    async def scenario():
        mb.fetching = asyncio.Event()
        task = asyncio.create_task(sup.main())
        await asyncio.sleep(0.3)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if sup.reloads:
                break
            await asyncio.sleep(0.02)
        assert sup.reloads == 1 and calls
        # two messages arrive; SIGTERM while the first is being fetched
        mb.deliver(mail(category="scam", mid="<a@x>"), now())
        mb.deliver(mail(category="scam", mid="<b@x>"), now())
        await asyncio.wait_for(mb.fetching.wait(), timeout=5)
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(task, timeout=10)

    assert asyncio.run(scenario()) == 0
    # SIGTERM during the batch's fetch: nothing of it was begun (no attempt counted against the
    # messages), both wait in the inbox for the next start, which files them
    assert len(mb.messages) == 2 and not mb.folders.get("Guard/Quarantine")
    assert "journal: messages.new" not in caplog.text  # the stop line lists no half-begun message


def test_one_failing_account_does_not_touch_the_other():
    settings = load_settings(accounts=[
        {"name": "good", "imap": {"host": "127.0.0.1", "tls": "none", "username": "good@crm.cat", "password": "x"}},
        {"name": "bad", "imap": {"host": "127.0.0.1", "tls": "none", "username": "bad@crm.cat", "password": "y"}},
    ])
    assert [s.daemon.account for s in per_account(settings)] == ["good", "bad"]
    good, bad = SlowMailbox(account="good"), BrokenMailbox(account="bad")
    reg = Registry()
    sup = supervisor(settings, {"good": good, "bad": bad}, registry=reg)

    async def scenario():
        task = asyncio.create_task(sup.run())
        await asyncio.sleep(0.2)
        good.deliver(mail(category="scam", mid="<g@x>"), now())
        for _ in range(200):
            if good.folders.get("Guard/Quarantine"):
                break
            await asyncio.sleep(0.02)
        problems, text = sup.health.problems(), reg.render()
        sup.on_stop()
        await asyncio.wait_for(task, timeout=10)
        return problems, text

    problems, text = asyncio.run(scenario())
    assert len(good.folders["Guard/Quarantine"]) == 1
    assert any(p.startswith("bad: IMAP not connected") and "AUTHENTICATIONFAILED" in p for p in problems)
    assert not any(p.startswith("good:") for p in problems)
    assert [p for p in sup.health.auth_problems() if p.startswith("bad:")], sup.health.auth_problems()
    import guard.daemon.health

    assert guard.daemon.health.auth_problems() == sup.health.auth_problems()
    assert 'guard_messages_total{account="good",category="scam"} 1' in text
    assert 'guard_errors_total{account="bad",kind="imap"}' in text
    assert 'guard_imap_connected{account="good"} 1' in text


def test_accounts_and_imap_are_exclusive():
    from guard.errors import ConfigError

    with pytest.raises(ConfigError, match="either \\[imap\\] or \\[\\[accounts\\]\\]"):
        load_settings(imap={"host": "127.0.0.1", "tls": "none", "username": "a@crm.cat", "password": "x"},
                      accounts=[{"imap": {"host": "127.0.0.1", "tls": "none", "username": "b@crm.cat",
                                          "password": "x"}}])
    with pytest.raises(ConfigError, match="appears twice"):
        load_settings(accounts=[{"imap": {"host": "127.0.0.1", "tls": "none", "username": "b@crm.cat",
                                          "password": "x"}}] * 2)
