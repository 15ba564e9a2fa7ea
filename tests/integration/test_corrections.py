"""The coordinator's corrections and digest against the real stack (Dovecot IMAP/LMTP + SMTP).

* a move to Guard/NotScam: label, allowlist entry, the message routed as an inquiry and moved to
  Guard/Routed; later mail from that sender is no longer quarantined;
* a move to Guard/Scam (while the daemon runs): label, denylist entry, and later mail from that
  sender is quarantined without a restart;
* the digest arrives in the coordinator's mailbox, checked item by item, campaigns included;
  a second digest reports nothing twice; the scheduled digest goes out when due.
"""

from __future__ import annotations

import email
import email.policy
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from daemon_messages import (COORDINATOR, EVENTS, PARTICIPANT, SCAMMER, _crlf, inquiry, new_id, out_of_office, report,
                             trusted_auth)
from harness import wait_until
from test_daemon import Guard, sent_by_guard

from guard.cli.main import main as guard_main

HERE = Path(__file__).resolve().parent


class LearningGuard(Guard):
    """The daemon tests' guard, plus the allow/deny rules and quick correction checks."""

    def __init__(self, ms, tmp: Path, digest: str = "", **daemon) -> None:
        super().__init__(ms, tmp, **daemon)
        text = self.config.read_text()
        text = text.replace(f'local_dir = "{tmp / "no-local-rules"}"', f'local_dir = "{HERE / "corrections_rules"}"')
        text += f"\n[learning]\npoll_seconds = 1\n\n[digest]\n{digest}\n"
        self.config.write_text(text)
        self.labelled = tmp / "labelled"

    def db(self, sql: str, *args):
        db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def entries(self, name: str) -> set[str]:
        return {r[0] for r in self.db("SELECT entry FROM sender_lists WHERE list=?", name)}

    def digest_now(self) -> None:
        assert guard_main(["--config", str(self.config), "digest", "--now"]) == 0


@pytest.fixture
def lguard(clean_mailstack, tmp_path):
    g = LearningGuard(clean_mailstack, tmp_path)
    yield g
    if g.proc is not None:
        g.proc.kill()
        g.proc.wait(10)
        g._logf.close()


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def move(ms, src: str, dst: str, count: int = 1) -> None:
    """The coordinator drags messages from ``src`` to ``dst`` in their mail client."""
    with ms.imap(EVENTS) as c:
        c.select_folder(src)
        uids = c.search("ALL")
        assert len(uids) == count, (src, uids)
        c.move(uids, dst)


BOOKING = """From: {name} <{sender}>
To: {to}
Subject: {subject}
Date: Mon, 05 Jan 2026 09:18:40 +0100
Message-ID: {mid}
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Dear {greeting},

We manage the room block for the January workshop at the conference venue. Only {n}
rooms left at the conference rate of {n}0 EUR per night. A credit card is required to
hold the reservation: reply with the card number and its expiry date.

Conference Housing Team
"""


def booking(sender: str, n: int, greeting: str = "participant", to: str = EVENTS, name: str = "Conference Housing",
            subject: str | None = None) -> bytes:
    return _crlf(BOOKING.format(sender=sender, n=n, greeting=greeting, to=to, name=name, mid=new_id("bk"),
                                subject=subject or f"Your room for the CRM workshop - {n} rooms left"))


def hotel(sender: str, subject: str = "Your group booking: room block confirmation") -> bytes:
    """Genuine mail that the booking-scam rule gets wrong (a real hotel writes about a room block);
    authenticated by the institute's receiving server, as a real hotel's mail is."""
    return _crlf(trusted_auth(sender) + f"""From: Hotel Catalonia Reservations <{sender}>
To: {EVENTS}
Subject: {subject}
Date: Mon, 05 Jan 2026 10:00:00 +0100
Message-ID: {new_id("hotel")}
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Dear events office,

as agreed with the institute, the room block for your January workshop is confirmed.
Could you send us the final list of speakers by Friday?

Kind regards,
Reservations
""")


# ---------------------------------------------------------------------------------------


def test_move_to_not_scam_allowlists_and_routes_the_message(lguard):
    g, ms = lguard, lguard.ms
    g.once()  # first start
    ms.send(hotel("reservas@hotel-catalonia.example"), "reservas@hotel-catalonia.example", [EVENTS])
    g.once()
    assert len(ms.fetch_all(EVENTS, "Guard/Quarantine")) == 1  # the false positive
    assert ms.fetch_all(COORDINATOR) == []
    before = len(ms.sink())

    move(ms, "Guard/Quarantine", "Guard/NotScam")
    g.once()

    assert g.entries("allowlist") == {"reservas@hotel-catalonia.example"}
    assert g.db("SELECT label, sender, state FROM labels") == [("genuine", "reservas@hotel-catalonia.example", "done")]
    # released: routed as an inquiry and moved to Guard/Routed
    assert ms.fetch_all(EVENTS, "Guard/NotScam") == []
    (routed,) = ms.fetch_all(EVENTS, "Guard/Routed")
    assert b"room block for your January workshop is confirmed" in routed
    (fwd_raw,) = ms.fetch_all(COORDINATOR)
    fwd = parsed(fwd_raw)
    assert "[guard] inquiry: Your group booking: room block confirmation" in fwd["Subject"]
    assert fwd["Reply-To"].addresses[0].addr_spec == "reservas@hotel-catalonia.example"
    out = sent_by_guard(ms, before)
    assert sorted(m.envelope_tos[0] for m in out) == [COORDINATOR, "reservas@hotel-catalonia.example"]
    (ack,) = [m for m in out if m.envelope_tos == ["reservas@hotel-catalonia.example"]]
    assert ack.envelope_from == "" and b"Auto-Submitted: auto-replied" in ack.raw
    # kept for training: the one place bodies are stored
    (labelled,) = (g.labelled / "genuine").glob("*.eml")
    assert b"room block for your January workshop" in labelled.read_bytes()

    # nothing happens twice
    g.once()
    assert len(ms.fetch_all(COORDINATOR)) == 1 and len(sent_by_guard(ms, before)) == 2

    # later mail from the allowlisted sender is no longer quarantined: routed as an inquiry
    ms.send(hotel("reservas@hotel-catalonia.example", "Room block: final list?"),
            "reservas@hotel-catalonia.example", [EVENTS])
    g.once()
    assert len(ms.fetch_all(EVENTS, "Guard/Quarantine")) == 0
    assert len(ms.fetch_all(EVENTS, "Guard/Routed")) == 2
    assert any("Room block: final list?" in parsed(r)["Subject"] for r in ms.fetch_all(COORDINATOR))

    # the digest shows the correction, and the released message once, as a routed inquiry
    g.digest_now()
    (d,) = digest_mail(ms)
    text = d.get_body(("plain",)).get_content()
    corr = section(text, "Your corrections")
    assert "reservas@hotel-catalonia.example" in corr
    assert "you marked it not a scam: the sender is allowlisted and the message released" in corr
    routed = section(text, "Inquiries passed to you")
    assert routed.count('"Your group booking: room block confirmation"') == 1
    assert routed.count('"Room block: final list?"') == 1


def test_move_to_scam_denylists_and_later_mail_is_quarantined_without_a_restart(lguard):
    g, ms = lguard, lguard.ms
    sneaky = "desk@visa-helpers.example"
    g.start()
    g.wait_log("IDLE)")
    ms.send(inquiry(sender=sneaky, name="Visa Helpers"), sneaky, [EVENTS])
    g.wait_done(1)
    wait_until(lambda: len(ms.fetch_all(EVENTS, "Guard/Routed")) == 1, what="routed")
    assert g.entries("denylist") == set()

    move(ms, "Guard/Routed", "Guard/Scam")
    wait_until(lambda: g.entries("denylist") == {sneaky}, what="denylist entry")
    # the label is journalled just after the list entry (its own commit): wait for it too
    wait_until(lambda: g.db("SELECT label, sender, state FROM labels") == [("scam", sneaky, "done")],
               what="label row")
    (labelled,) = (g.labelled / "scam").glob("*.eml")
    assert b"invitation letter" in labelled.read_bytes()
    assert len(ms.fetch_all(EVENTS, "Guard/Scam")) == 1  # it stays where the coordinator put it

    before = len(ms.sink())
    ms.send(inquiry(sender=sneaky, name="Visa Helpers"), sneaky, [EVENTS])  # the same harmless-looking text
    g.wait_done(2)
    wait_until(lambda: len(ms.fetch_all(EVENTS, "Guard/Quarantine")) == 1, what="quarantined")
    assert sent_by_guard(ms, before) == []  # a scam: the sender never hears from us
    assert len(ms.fetch_all(EVENTS, "Guard/Routed")) == 0
    assert g.stop() == 0
    (verdict,) = g.db("SELECT m.verdict FROM messages m WHERE m.state='done' AND m.folder='Guard/Quarantine'")
    assert '"SENDER_DENYLISTED"' in verdict[0]


def digest_mail(ms) -> list:
    return [parsed(r) for r in ms.fetch_all(COORDINATOR) if parsed(r)["Subject"].startswith("[guard] ") and "digest " in parsed(r)["Subject"]]


def section(text: str, title: str) -> str:
    """The lines of one digest section (up to the next '== ' heading)."""
    start = text.index(f"== {title}")
    end = text.find("\n== ", start + 3)
    return text[start:end if end >= 0 else len(text)]


def test_digest_arrives_and_is_right_item_by_item(lguard):
    g, ms = lguard, lguard.ms
    g.once()  # first start
    campaign = [("housing1@travellerpoint.example", 7, "Dr Smith"), ("housing2@travellerpoint.example", 3, "Prof. Jones"),
                ("booking@travellerpoint.example", 12, "speaker"), ("rooms@travel-point.example", 5, "participant")]
    for sender, n, greeting in campaign:
        ms.send(booking(sender, n, greeting), sender, [EVENTS])
    other_scam = _crlf(f"""From: Attendee Lists <sales@lists.example>
To: {EVENTS}
Subject: Attendee list for your conference
Message-ID: {new_id("list")}
Date: Mon, 05 Jan 2026 09:00:00 +0100

Hello, we offer the verified attendee list of your event: 2,400 contacts with e-mail and phone.
Order now, only 7 rooms left in our conference housing partner hotel.
""")
    ms.send(other_scam, "sales@lists.example", [EVENTS])
    ms.send(report(), "alice@example.org", [EVENTS])  # alice forwards the campaign's mail, asks
    ms.send(report(reporter="bob@example.org", paid=True), "bob@example.org", [EVENTS])  # bob paid
    ms.send(inquiry(), PARTICIPANT, [EVENTS])
    ms.send(inquiry(), PARTICIPANT, [EVENTS])  # asks again: the acknowledgement is held back
    ms.send(out_of_office(), "bob@example.org", [EVENTS])
    g.once()
    assert g.done() == 10  # all handled (the first start found nothing)

    g.digest_now()
    (d,) = digest_mail(ms)
    text = d.get_body(("plain",)).get_content()
    html = d.get_body(("html",)).get_content()
    artifacts = HERE.parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "digest-integration.txt").write_text(f"Subject: {d['Subject']}\n\n{text}", encoding="utf-8")
    assert d["To"].addresses[0].addr_spec == COORDINATOR
    assert d["Subject"].startswith("[guard] URGENT, digest ") and "10 messages, 1 for you" in d["Subject"]
    assert d["Auto-Submitted"] == "auto-generated"
    # one line says what arrived and what needs the coordinator today
    assert ("10 messages: 5 scams quarantined, 2 participants' reports answered, 2 inquiries passed to you, "
            "1 automated message left unanswered") in text
    assert "For you today: 1 participant who may have paid a scammer." in text

    urgent = section(text, "URGENT")
    assert "bob@example.org" in urgent and urgent.count('"Fwd: Your room for the CRM workshop - 7 rooms left"') == 1
    assert "report, in Guard/Review" in urgent and "Says they already paid" in urgent

    scams = section(text, "Scams quarantined")
    assert "(2 campaigns)" in scams
    # the four copies and alice's report of the same mail: one campaign, one line
    assert "4 copies, 1 report from a participant" in scams
    for sender, _, _ in campaign:
        assert sender in scams
    assert SCAMMER in scams  # the sender of the mail alice forwarded
    assert '  * "Attendee list for your conference": 1 copy' in scams.splitlines()  # no "0 reports", no "score -"
    assert "why: Booking-scam phrasing (daemon test rule)" in scams
    assert scams.count("an advisory draft for the event page is at the end") == 1  # the attendee-list mail gets none
    assert "Asks something" not in scams  # only reasons that explain the verdict

    assert "== To review" not in text and "== Problems" not in text  # empty sections are left out
    routed = section(text, "Inquiries passed to you")
    assert routed.count('"Invitation letter for my visa"') == 2 and routed.count(PARTICIPANT) == 2
    assert routed.count("in Guard/Routed") == 2

    sent = section(text, "Automatic replies sent")
    assert "alice@example.org" in sent and "verdict on the message they forwarded" in sent
    assert "bob@example.org" in sent and '"contact your bank now" reply' in sent
    assert PARTICIPANT in sent and "acknowledgement, in English" in sent
    held = section(text, "Replies held back")
    assert PARTICIPANT in held and "acknowledgement held back" in held and "window" in held

    advisory = section(text, "Advisory draft for the event page")
    assert "We are aware that participants and speakers are receiving messages" in advisory
    assert "travellerpoint.example" in advisory and "never ask for card or bank details" in advisory

    assert "<h2" in html and "4 copies, 1 report from a participant" in html and "Advisory draft for the event page" in html

    # the second digest reports nothing twice
    g.digest_now()
    d1, d2 = digest_mail(ms)
    text2 = d2.get_body(("plain",)).get_content()
    assert ": 0 messages, nothing for you" in d2["Subject"]
    assert "bob@example.org" not in text2 and "copies" not in text2
    # ... and nothing is skipped: a new message is in the next one
    ms.send(booking("late@travellerpoint.example", 2), "late@travellerpoint.example", [EVENTS])
    g.once()
    g.digest_now()
    d3 = digest_mail(ms)[2]
    text3 = d3.get_body(("plain",)).get_content()
    assert ": 1 message, nothing for you" in d3["Subject"] and "1 scam quarantined" in text3
    assert "late@travellerpoint.example" in text3 and any(x.endswith(": 1 copy") for x in text3.splitlines())
    assert g.db("SELECT COUNT(*), MAX(upto) FROM digests WHERE state='sent'") == [(3, 11)]


def test_scheduled_digest_goes_out_when_due(clean_mailstack, tmp_path):
    due = (datetime.now(timezone.utc) + timedelta(seconds=4)).replace(microsecond=0)
    g = LearningGuard(clean_mailstack, tmp_path, digest=f'timezone = "UTC"\ntimes = ["{due.time().isoformat()}"]')
    ms = g.ms
    g.once()  # first start: the next digest is due at `due`
    ms.send(booking(SCAMMER, 7), SCAMMER, [EVENTS])
    g.once()
    assert digest_mail(ms) == []
    time.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    g.once()
    (d,) = digest_mail(ms)
    assert any(x.endswith(": 1 copy") for x in d.get_body(("plain",)).get_content().splitlines())
    g.once()
    assert len(digest_mail(ms)) == 1  # not due again until tomorrow
