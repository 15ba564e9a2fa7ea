"""Building, journalling and sending the coordinator's digest (the daemon's and ``guard digest``'s).

    queue rows above the watermark ──► digest.build ──► render ──► journal intent ──► SMTP ──► journal sent
                                                                                               (watermark moves)

A digest left as ``intent`` by a crash or a failed send is sent again, same
bytes and Message-ID, before a new one is built (see guard.digest.records).

Two senders on one journal (the daemon's scheduled digest and ``guard digest
--now``, or two daemons by mistake) never both send: a sender first **claims**
the digest in one ``BEGIN IMMEDIATE`` transaction (table ``digest_claims``, one
row, a lease naming the process), then decides -- inside the claim, from the
journal as it is now -- whether a digest is still due, builds, journals and
sends it, and releases the claim. Whoever finds the claim held by a live sender
does nothing. A claim left by a process that died is taken over once its lease
has run out, or at once when its process is gone from this host.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial

from guard.digest import build as dg
from guard.digest import records as dj
from guard.errors import PermanentIOError, TransientIOError
from guard.daemon.journal import Journal
from guard.paths import shipped
from guard.respond.render import Identity, Renderer, _address, _alternative, _base

log = logging.getLogger("guard.digest.build")

TEMPLATE = "digest"

#: how long a claim holds at most (a send is bounded by the SMTP and token timeouts, well below this)
CLAIM_LEASE_SECONDS = 900.0

_CLAIMS_SQL = ("CREATE TABLE IF NOT EXISTS digest_claims (slot TEXT PRIMARY KEY, owner TEXT NOT NULL, "
               "host TEXT NOT NULL, pid INTEGER NOT NULL, claimed REAL NOT NULL, until REAL NOT NULL)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class DigestClaim:
    """The right to send the digest: one row in ``digest_claims``, taken in a BEGIN IMMEDIATE
    transaction so that of two processes racing for it exactly one gets it."""

    SLOT = "send"

    def __init__(self, journal: Journal, now: datetime, lease: float = CLAIM_LEASE_SECONDS) -> None:
        self.journal = journal
        self.owner = secrets.token_hex(8)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.now = now
        self.lease = lease
        self.holder: tuple[str, int] | None = None  # (host, pid) of the other sender when not acquired

    def _tx(self):
        db: sqlite3.Connection = self.journal.db

        class Tx:
            def __enter__(self_):
                db.execute("BEGIN IMMEDIATE")
                return db

            def __exit__(self_, exc_type, exc, tb):
                db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return Tx()

    def acquire(self) -> bool:
        now = self.now.timestamp()
        with self._tx() as db:
            db.execute(_CLAIMS_SQL)
            row = db.execute("SELECT owner, host, pid, until FROM digest_claims WHERE slot=?", (self.SLOT,)).fetchone()
            if row is not None:
                owner, host, pid, until = row[0], row[1], row[2], row[3]
                stale = until <= now or (host == self.host and pid != self.pid and not _pid_alive(pid))
                if not stale:
                    self.holder = (host, pid)
                    return False
                log.warning("digest claim of %s (pid %s) is stale: taking it over", host, pid)
            db.execute("INSERT OR REPLACE INTO digest_claims (slot, owner, host, pid, claimed, until) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (self.SLOT, self.owner, self.host, self.pid, now, now + self.lease))
        return True

    def held_elsewhere(self) -> bool:
        """True when another live sender holds the claim now (read only; no claim taken)."""
        try:
            row = self.journal.db.execute("SELECT owner, host, pid, until FROM digest_claims WHERE slot=?",
                                          (self.SLOT,)).fetchone()
        except sqlite3.OperationalError:  # no claim was ever taken on this journal
            return False
        if row is None or row[0] == self.owner:
            return False
        return not (row[3] <= self.now.timestamp() or (row[1] == self.host and row[2] != self.pid
                                                        and not _pid_alive(row[2])))

    def release(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM digest_claims WHERE slot=? AND owner=?", (self.SLOT, self.owner))


def schedule_of(settings) -> dg.Schedule:
    d = settings.digest
    return dg.Schedule(tuple(d.times), d.timezone, tuple(sorted(set(d.weekdays))))


def options_of(settings) -> dg.Options:
    d = settings.digest
    return dg.Options(advisory_threshold=d.advisory_threshold, advisory_window=timedelta(hours=d.advisory_hours),
                      similarity=d.similarity, review_folder=settings.daemon.folders.review)


def _institute(settings) -> dict:
    i = settings.institute
    return {"name": i.name, "short_name": i.short_name, "events_address": i.events_address, "website": i.website,
            "scam_warning_url": i.scam_warning_url}


@dataclass
class Rendered:
    subject: str
    text: str
    html: str
    raw: bytes
    message_id: str
    data: dg.DigestData


def render_digest(settings, renderer: Renderer, data: dg.DigestData, *, now: datetime, message_id: str) -> Rendered:
    """The digest as (subject, text, html) and as ready-to-send bytes. Pure apart from reading templates."""
    ctx = dg.template_context(data, institute=_institute(settings),
                              coordinator={"name": settings.institute.coordinator.name,
                                           "address": settings.institute.coordinator.address},
                              event_names=[e.name for e in settings.events])
    subject, text, html = renderer.render(TEMPLATE, ctx, renderer.coordinator_language)
    ident = Identity.from_settings(settings)
    m = _base(ident, to=_address(ident.coordinator_name, ident.coordinator_address), subject=subject, now=now,
              message_id=message_id, auto="auto-generated")
    _alternative(m, text, html, message_id)
    return Rendered(subject, text, html, m.as_bytes(), message_id, data)


class DigestService:
    """Sends the digest when it is due; ``send_now`` for ``guard digest --now``."""

    def __init__(self, settings, journal: Journal, mailer, renderer: Renderer, *, clock, mode: str = "live") -> None:
        self.settings = settings
        self.journal = journal
        self.mailer = mailer
        if TEMPLATE not in renderer.templates():  # a site template directory without a digest: the shipped one
            renderer = Renderer(shipped("templates"), renderer.default_language, fallback=renderer.fallback,
                                coordinator_language=renderer.coordinator_language)
        self.renderer = renderer
        self.clock = clock
        self.mode = mode
        self.schedule = schedule_of(settings)
        self.options = options_of(settings)
        self.busy: tuple[str, int] | None = None  # set by send_now when another process held the claim

    def check(self) -> None:
        """Render an empty digest once (start-up): a broken template fails now, not at 08:00."""
        import jinja2

        from guard.errors import ConfigError

        now = self.clock()
        try:
            render_digest(self.settings, self.renderer, dg.build([], dg.Period(None, now, self.schedule.tz)),
                          now=now, message_id="<check@guard.invalid>")
        except jinja2.TemplateError as exc:
            raise ConfigError(f"{self.renderer.root}: digest template: {type(exc).__name__}: {exc}") from None

    # -- when --------------------------------------------------------------------------------
    def reference(self) -> datetime:
        """The last digest sent, or (before the first) when guard first started sending digests."""
        last = dj.last_sent(self.journal)
        if last is not None:
            return last
        since = dj.state_setdefault(self.journal, "digest.since", str(self.clock().timestamp()))
        return datetime.fromtimestamp(float(since), timezone.utc)

    def due(self) -> datetime:
        return dg.next_due(self.reference(), self.clock(), self.schedule)

    def seconds_until_due(self) -> float | None:
        if not self.settings.digest.enabled or self.mode == "dry-run":
            return None
        if DigestClaim(self.journal, self.clock()).held_elsewhere():
            return 10.0  # another process is sending it: look again in a while, not in a busy loop
        if dj.pending_digest(self.journal) is not None:
            return 60.0  # a digest whose send failed: retried at the next wake-up, at least every minute
        return max(0.0, (self.due() - self.clock()).total_seconds())

    async def maybe_send(self) -> bool:
        """Send the digest if it is due (or one is pending from before); True when one went out."""
        if not self.settings.digest.enabled or self.mode == "dry-run":
            return False
        if dj.pending_digest(self.journal) is None and self.due() > self.clock():
            return False
        return await self.send_now(only_if_due=True)

    # -- what ---------------------------------------------------------------------------------
    def preview(self) -> Rendered:
        """The digest that would go out now (nothing journalled, nothing sent)."""
        now = self.clock()
        data = self._data(dj.watermark(self.journal), dj.queue_top(self.journal), now)
        return render_digest(self.settings, self.renderer, data, now=now, message_id=self._message_id())

    def _data(self, after: int, upto: int, now: datetime) -> dg.DigestData:
        period = dg.Period(dj.last_sent(self.journal), now, self.schedule.tz)
        return dg.build(dj.records(self.journal, after, upto), period, self.options)

    def _message_id(self) -> str:
        domain = self.settings.institute.events_address.rpartition("@")[2]
        return f"<guard.digest.build.{secrets.token_hex(8)}@{domain}>"

    async def send_now(self, *, only_if_due: bool = False) -> bool:
        """Resend a pending digest, else build, journal and send a new one. True when one was sent.

        Under the digest claim: when another process holds it (it is sending the digest right now),
        nothing is sent and ``self.busy`` tells who. With ``only_if_due`` (the schedule) the digest
        is sent only when it is still due once the claim is held: a digest another process sent in
        the meantime (``guard digest --now``) counts for this period."""
        self.busy = None
        claim = DigestClaim(self.journal, self.clock())
        if not claim.acquire():
            self.busy = claim.holder
            log.log(logging.INFO if only_if_due else logging.WARNING,
                    "the digest is being sent by another guard process (%s, pid %s): not sending it twice",
                    *claim.holder)
            return False
        try:
            if dj.settle_unconfirmed(self.journal, self.clock()):
                log.warning("a digest was being handed to the SMTP server when guard stopped: taken as sent "
                            "(unconfirmed), not sent again")
            if only_if_due and dj.pending_digest(self.journal) is None and self.due() > self.clock():
                log.info("digest no longer due: another guard process sent it")
                return False
            return await self._send_claimed()
        finally:
            claim.release()
            await self._close_mailer()

    async def _close_mailer(self) -> None:
        """QUIT the SMTP connection the digest used: nothing is left open until the next batch."""
        close = getattr(self.mailer, "close", None)
        if close is None:
            return
        try:
            await close()
        except Exception as exc:  # the digest is journalled already; a failed QUIT changes nothing
            log.debug("closing the SMTP connection after the digest: %s", exc)

    async def _send_claimed(self) -> bool:
        row = dj.pending_digest(self.journal)
        if row is None:
            now = self.clock()
            after, upto = dj.watermark(self.journal), dj.queue_top(self.journal)
            data = self._data(after, upto, now)
            if data.empty and not self.settings.digest.send_empty:
                log.info("digest due but nothing to report: none sent")
                # count it as sent so the schedule moves on; nothing is covered (upto = watermark)
                row = dj.digest_intent(self.journal, upto=after, period_start=data.period.start, period_end=now,
                                       recipient="", envelope_from="", message_id="", raw=b"", now=now)
                dj.digest_sent(self.journal, row.id, now)
                return False
            r = render_digest(self.settings, self.renderer, data, now=now, message_id=self._message_id())
            row = dj.digest_intent(self.journal, upto=upto, period_start=data.period.start, period_end=now,
                                   recipient=self.settings.institute.coordinator.address,
                                   envelope_from=self.settings.institute.events_address, message_id=r.message_id,
                                   raw=r.raw, now=now)
        else:
            log.warning("digest %s (Message-ID %s) was never handed to the SMTP server: sending it now", row.id,
                        row.message_id)
        try:
            await self.mailer.send(row.raw, row.envelope_from, [row.recipient],
                                   on_commit=partial(dj.digest_sending, self.journal, row.id, self.clock()))
        except (TransientIOError, PermanentIOError) as exc:
            dj.digest_error(self.journal, row.id, str(exc))
            log.warning("digest %s not sent (%s); it is retried at the next wake-up", row.id, exc)
            return False
        dj.digest_sent(self.journal, row.id, self.clock())
        log.info("digest %s sent to the coordinator (queue rows up to %s, Message-ID %s)", row.id, row.upto,
                 row.message_id)
        return True

