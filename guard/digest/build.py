"""The coordinator's digest: when it is due, and what it says. Pure.

    journal records (no bodies) ──► build(records, period) ──► DigestData ──► templates digest.{txt,html}.j2

:func:`next_due` gives the next time a digest is due after the last one, on a
schedule of local wall-clock times (08:00 in the institute's time zone by
default). Times are computed with :mod:`zoneinfo`, day by day in local time,
so a digest stays at 08:00 local across daylight-saving changes. A time that
does not exist on a spring-forward day (02:30 in Europe/Madrid on the last
Sunday of March) is taken as the same instant one hour later in wall-clock
terms (Python's ``fold=0``: 03:30 local); a time that happens twice on a
fall-back day is taken at its first occurrence. When guard was down at a due
time, the digest is due at once (``next_due`` <= now): late, never skipped.

:func:`build` sorts what happened since the last digest into sections:

* **urgent**: participants who say they may already have paid or given details;
* **campaigns**: quarantined scams and participants' reports of scams, grouped
  by near-duplicate fingerprints (:mod:`guard.digest.campaigns`): one line per
  campaign with its count, senders, first and last seen; a campaign with
  ``advisory_threshold`` or more copies and reports within ``advisory_window``
  carries a ready-to-publish advisory draft for the event page;
* **review**: what guard filed for review (suspicious mail, unclear reports);
* **routed**: inquiries forwarded to the coordinator (and released corrections);
* **replies sent** and **replies suppressed** (with the reply gate's reasons);
* **failed**: messages that could not be processed and sends that failed.

Each item gives sender, subject, date, category, score, top reasons (only those that explain the
verdict) and folder. Nothing here is worded for a reader: an item carries codes (``note``: why it is
listed; ``send``: which message; ``language``: the reply's language and why) and the machine text of
other parts of guard (``detail``: the reply gate's reasons, an SMTP error); the templates
``templates/<lang>/digest.{txt,html}.j2`` put everything in words, in the coordinator's language.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from guard.digest import campaigns

# -- the schedule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Local wall-clock times at which a digest is due, on the given weekdays (0 = Monday)."""

    times: tuple[time, ...] = (time(8, 0),)
    tz: str = "Europe/Madrid"
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


def _slots_on(day: date, schedule: Schedule) -> list[datetime]:
    if day.weekday() not in schedule.weekdays:
        return []
    zone = schedule.zone
    out = []
    for t in sorted(schedule.times):
        local = datetime.combine(day, t).replace(tzinfo=zone, fold=0)
        # a non-existent local time (spring forward) normalises through UTC to the later wall time
        out.append(local.astimezone(timezone.utc))
    return out


def next_due(last_sent: datetime, now: datetime, schedule: Schedule = Schedule()) -> datetime:
    """The first scheduled time strictly after ``last_sent`` (UTC, aware).

    It may be before ``now`` (a digest was missed while guard was down: send at once). ``now``
    only bounds the search; both arguments must be timezone-aware."""
    if last_sent.tzinfo is None or now.tzinfo is None:
        raise ValueError("next_due needs timezone-aware datetimes")
    if not schedule.times or not schedule.weekdays:
        raise ValueError("the digest schedule has no times or no weekdays")
    zone = schedule.zone
    day = last_sent.astimezone(zone).date() - timedelta(days=1)
    for _ in range(16):  # at most a week ahead, plus the day before for a time zone's edge
        for slot in _slots_on(day, schedule):
            if slot > last_sent:
                return slot
        day += timedelta(days=1)
    raise ValueError("no digest time found within two weeks")  # pragma: no cover - weekdays is non-empty


# -- the records and the digest -----------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    kind: str  # reply, forward, alert
    template: str
    state: str  # intent, sending, sent, failed
    error: str | None = None


#: the codes of Item.note: why an item is listed (the templates word them)
PAID = "paid"  # the participant says they may already have paid or given details
NOT_SCAM, SCAM = "not_scam", "scam"  # a coordinator's correction
UNCONFIRMED = "unconfirmed"  # taken as sent after a crash at its commit point (guard/daemon/journal.py)
SEND_FAILED = "failed"  # a send failed for good (detail: the error)
POISON = "poison"  # could not be processed (detail: why, when known)
COPY, REPORT = "copy", "report"  # a campaign's quarantined copy, or a participant's report of it


@dataclass(frozen=True)
class Record:
    """What the journal keeps of one handled message for the digest (no body: a fingerprint)."""

    ref: str  # Message-ID, or the ledger key when there is none
    sender: str
    subject: str
    date: datetime | None
    category: str | None
    score: float | None
    reasons: tuple[str, ...] = ()  # descriptions, heaviest first
    folder: str | None = None
    state: str = "done"  # done | poison
    fingerprint: str = ""
    paid: bool = False
    inner_category: str | None = None
    inner_sender: str = ""
    inner_subject: str = ""
    sends: tuple[Send, ...] = ()
    suppressed: tuple[tuple[str, tuple[str, ...]], ...] = ()
    note: str | None = None
    correction: str | None = None  # "not_scam" / "scam": a coordinator's correction of this message
    #: the automatic reply's language and why ({"language", "reason", "detected"}; guard.respond.languages)
    reply_language: dict | None = None


@dataclass(frozen=True)
class Period:
    start: datetime | None  # the previous digest (None: since guard started)
    end: datetime
    tz: str = "Europe/Madrid"


@dataclass(frozen=True)
class Item:
    ref: str
    sender: str  # "" = unknown
    subject: str  # "" = none
    date: datetime | None
    category: str  # "" = none (not processed)
    score: float | None
    reasons: tuple[str, ...]
    folder: str  # "" = left in the inbox
    detail: str = ""  # machine text from elsewhere: the reply gate's reasons, an error, a processing note
    note: str = ""  # a code: PAID, NOT_SCAM, SCAM, UNCONFIRMED, SEND_FAILED, POISON, COPY, REPORT
    send: str = ""  # the send it is about: "reply inquiry_ack", "forward forward_summary"
    language: dict | None = None  # a reply's language and why


@dataclass(frozen=True)
class Campaign:
    subject: str
    copies: int  # quarantined copies
    reports: int  # participants' reports of it
    senders: tuple[str, ...]
    first_seen: datetime | None
    last_seen: datetime | None
    score: float | None
    reasons: tuple[str, ...]
    folders: tuple[str, ...]
    items: tuple[Item, ...]
    peak_24h: int  # most copies + reports within any advisory window
    advisory: bool = False

    @property
    def count(self) -> int:
        return self.copies + self.reports

    @property
    def sender_domains(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.rpartition("@")[2].lower() for s in self.senders if "@" in s))


@dataclass(frozen=True)
class DigestData:
    period: Period
    urgent: tuple[Item, ...]
    campaigns: tuple[Campaign, ...]
    review: tuple[Item, ...]
    routed: tuple[Item, ...]
    replies_sent: tuple[Item, ...]
    replies_suppressed: tuple[Item, ...]
    failed: tuple[Item, ...]
    corrections: tuple[Item, ...]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def advisories(self) -> tuple[Campaign, ...]:
        return tuple(c for c in self.campaigns if c.advisory)

    @property
    def empty(self) -> bool:
        return not sum(self.counts.values())


@dataclass(frozen=True)
class Options:
    advisory_threshold: int = 3
    advisory_window: timedelta = timedelta(hours=24)
    similarity: float = 0.5
    review_folder: str = "Guard/Review"
    top_reasons: int = 3


def _item(r: Record, top: int, detail: str = "", *, note: str = "", send: str = "", language: dict | None = None) -> Item:
    return Item(r.ref, r.sender or "", r.subject or "", r.date, r.category or "", r.score, tuple(r.reasons[:top]),
                r.folder or "", detail, note, send, language)


def _is_campaign_member(r: Record) -> bool:
    if r.state != "done" or r.paid:
        return False
    return r.category == "scam" or (r.category == "report" and r.inner_category in ("scam", "suspicious"))


def peak_in_window(times: Iterable[datetime | None], window: timedelta) -> int:
    """The most events within any interval of length ``window`` (closed)."""
    ts = sorted(t for t in times if t is not None)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _campaigns(records: Sequence[Record], opts: Options) -> tuple[Campaign, ...]:
    members = [r for r in records if _is_campaign_member(r)]
    groups = campaigns.group([r.fingerprint for r in members], opts.similarity)
    by_group: dict[int, list[Record]] = {}
    for r, g in zip(members, groups):
        by_group.setdefault(g, []).append(r)
    out = []
    for rs in by_group.values():
        copies = [r for r in rs if r.category == "scam"]
        reports = [r for r in rs if r.category != "scam"]
        subjects = Counter([r.subject for r in copies] + [r.inner_subject for r in reports if r.inner_subject])
        senders = [r.sender for r in copies] + [r.inner_sender for r in reports if r.inner_sender]
        dates = [r.date for r in rs if r.date is not None]
        reasons = Counter(x for r in copies for x in r.reasons[:opts.top_reasons])
        scores = [r.score for r in copies if r.score is not None]
        peak = peak_in_window([r.date for r in rs], opts.advisory_window)
        items = tuple(sorted((_item(r, opts.top_reasons, note=REPORT if r.category == "report" else COPY)
                              for r in rs), key=lambda i: (i.date or datetime.min.replace(tzinfo=timezone.utc))))
        out.append(Campaign(
            subject=(subjects.most_common(1)[0][0] if subjects else ""),
            copies=len(copies), reports=len(reports),
            senders=tuple(dict.fromkeys(s.lower() for s in senders if s)),
            first_seen=min(dates) if dates else None, last_seen=max(dates) if dates else None,
            score=max(scores) if scores else None,
            reasons=tuple(x for x, _ in reasons.most_common(opts.top_reasons)),
            folders=tuple(dict.fromkeys(r.folder or "" for r in rs)),
            items=items, peak_24h=peak, advisory=peak >= opts.advisory_threshold,
        ))
    out.sort(key=lambda c: (-c.count, c.first_seen or datetime.min.replace(tzinfo=timezone.utc)))
    return tuple(out)


def build(records: Iterable[Record], period: Period, options: Options = Options()) -> DigestData:
    """Sort the period's records into the digest's sections (every record lands somewhere or in counts)."""
    records = list(records)
    top = options.top_reasons
    urgent, review, routed, failed, sent, suppressed, corrections = [], [], [], [], [], [], []
    counts: Counter[str] = Counter()
    for r in records:
        if r.correction:
            corrections.append(_item(r, top, note=r.correction))
            counts["corrections"] += 1
            continue  # a released message also has its own record (routed) once its sends are done
        counts[r.category or r.state] += 1
        if r.state == "poison":
            failed.append(_item(r, top, r.note or "", note=POISON))
            continue
        for s in r.sends:
            unconfirmed = s.state == "sent" and (s.error or "").startswith("unconfirmed")
            send = f"{s.kind} {s.template}"
            if s.kind == "reply" and s.state == "sent":
                sent.append(_item(r, top, note=UNCONFIRMED if unconfirmed else "", send=send,
                                  language=r.reply_language))
            elif unconfirmed:  # a forward or alert to the coordinator: worth a look
                failed.append(_item(r, top, note=UNCONFIRMED, send=send))
            if s.state == "failed":
                failed.append(_item(r, top, s.error or "", note=SEND_FAILED, send=send))
        for action, reasons in r.suppressed:
            suppressed.append(_item(r, top, "; ".join(reasons), send=action))
        if r.paid:
            urgent.append(_item(r, top, note=PAID))
        elif _is_campaign_member(r):
            pass
        elif r.folder == options.review_folder or r.category == "suspicious":
            review.append(_item(r, top, r.note or ""))
        elif r.category == "inquiry" and any(s.kind == "forward" for s in r.sends):
            routed.append(_item(r, top))

    def by_date(items):
        return tuple(sorted(items, key=lambda i: (i.date or datetime.min.replace(tzinfo=timezone.utc), i.ref)))

    return DigestData(period, by_date(urgent), _campaigns(records, options), by_date(review), by_date(routed),
                      by_date(sent), by_date(suppressed), by_date(failed), by_date(corrections), dict(counts))


# -- for the templates ----------------------------------------------------------------------------


def _fmt(t: datetime | None, zone: ZoneInfo) -> str:
    return t.astimezone(zone).strftime("%Y-%m-%d %H:%M") if t else ""


def template_context(data: DigestData, *, institute: dict, coordinator: dict, event_names: Sequence[str] = ()) -> dict:
    """Plain values (strings, numbers, lists, dicts) for digest.txt.j2 and digest.html.j2.

    Absent values are empty ("" sender, subject, folder or date; None score); the templates say so
    in their language."""
    zone = ZoneInfo(data.period.tz)

    def item(i: Item) -> dict:
        return {"ref": i.ref, "sender": i.sender, "subject": i.subject, "date": _fmt(i.date, zone),
                "category": i.category, "score": None if i.score is None else f"{i.score:.1f}",
                "reasons": list(i.reasons), "folder": i.folder, "detail": i.detail, "note": i.note,
                "send": i.send, "template": (re.split(r"[:\s]+", i.send) + [""])[1], "language": i.language}

    def campaign(c: Campaign) -> dict:
        return {"subject": c.subject, "count": c.count, "copies": c.copies, "reports": c.reports,
                "senders": list(c.senders[:8]), "more_senders": max(0, len(c.senders) - 8),
                "domains": list(c.sender_domains[:8]), "first_seen": _fmt(c.first_seen, zone),
                "last_seen": _fmt(c.last_seen, zone), "score": None if c.score is None else f"{c.score:.1f}",
                "reasons": list(c.reasons), "folders": list(c.folders), "peak_24h": c.peak_24h,
                "advisory": c.advisory, "first_seen_date": _fmt(c.first_seen, zone)[:10],
                "same_time": c.first_seen == c.last_seen}

    sections = {
        "urgent": [item(i) for i in data.urgent],
        "review": [item(i) for i in data.review],
        "routed": [item(i) for i in data.routed],
        "replies_sent": [item(i) for i in data.replies_sent],
        "replies_suppressed": [item(i) for i in data.replies_suppressed],
        "failed": [item(i) for i in data.failed],
        "corrections": [item(i) for i in data.corrections],
    }
    return {
        "institute": institute,
        "coordinator": coordinator,
        "events": list(event_names),
        # start "": no digest before this one (everything since guard started)
        "period": {"start": _fmt(data.period.start, zone) if data.period.start else "",
                   "end": _fmt(data.period.end, zone), "tz": data.period.tz},
        "counts": dict(sorted(data.counts.items())),
        "total": sum(v for k, v in data.counts.items() if k != "corrections"),
        "campaigns": [campaign(c) for c in data.campaigns],
        "advisories": [campaign(c) for c in data.advisories],
        **sections,
    }
