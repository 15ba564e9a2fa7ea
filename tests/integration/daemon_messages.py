"""Test messages for the daemon's integration tests (written for these tests, CRLF line ends)."""

from __future__ import annotations

import itertools
import time

EVENTS = "events@crm.cat"
COORDINATOR = "nhernandez@crm.cat"
PARTICIPANT = "participant@example.org"

#: the [institute] part of every integration-test configuration
INSTITUTE_TOML = f"""[institute]
name = "Centre de Recerca Matemàtica"
short_name = "CRM"
official_domains = ["crm.cat"]
events_address = "{EVENTS}"
website = "https://www.crm.cat"
scam_warning_url = "https://www.crm.cat/scam-warning"
code_of_conduct_url = "https://www.crm.cat/code-of-conduct"
[institute.coordinator]
name = "Núria Hernández"
address = "{COORDINATOR}"
"""
SCAMMER = "housing@travellerpoint.example"

_seq = itertools.count(1)


def new_id(tag: str) -> str:
    return f"<{tag}.{time.time_ns()}.{next(_seq)}@test.example>"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def trusted_auth(sender: str) -> str:
    """What the institute's receiving server (authserv-id mx.crm.cat, trusted by the test
    configurations) adds on top of a genuine message from ``sender``: SPF and DMARC pass."""
    domain = sender.rpartition("@")[2]
    return f"Authentication-Results: mx.crm.cat; spf=pass smtp.mailfrom={sender}; dmarc=pass header.from={domain}\n"


def scam(mid: str | None = None, to: str = EVENTS) -> bytes:
    return _crlf(f"""From: "Conference Housing" <{SCAMMER}>
To: {to}
Subject: Your room for the CRM workshop - 7 rooms left
Date: Mon, 05 Jan 2026 09:18:40 +0100
Message-ID: {mid or new_id("scam")}
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Dear participant,

We manage the room block for the January workshop. Only 7 rooms left at the
conference rate. A credit card is required to hold the reservation.

Conference Housing Team
""")


def inquiry(sender: str = PARTICIPANT, mid: str | None = None, name: str = "Pat Participant") -> bytes:
    return _crlf(trusted_auth(sender) + f"""From: {name} <{sender}>
To: {EVENTS}
Subject: Invitation letter for my visa
Date: Mon, 05 Jan 2026 10:00:00 +0100
Message-ID: {mid or new_id("inq")}
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Hello,

could you send me an invitation letter for my visa application? My name in
the passport is PARTICIPANT Pat.

Thank you,
Pat
""")


def report(reporter: str = "alice@example.org", paid: bool = False) -> bytes:
    inner = scam(to=reporter).decode()
    own = "I already paid them with my card, what do I do?" if paid else "Is this real? It looks odd."
    return _crlf(trusted_auth(reporter) + f"""From: Alice Example <{reporter}>
To: {EVENTS}
Subject: Fwd: Your room for the CRM workshop - 7 rooms left
Date: Mon, 05 Jan 2026 11:00:00 +0100
Message-ID: {new_id("rep")}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd-boundary"

--fwd-boundary
Content-Type: text/plain; charset="utf-8"

{own}

--fwd-boundary
Content-Type: message/rfc822
Content-Disposition: inline

{inner}
--fwd-boundary--
""")


def bounce(original: bytes) -> bytes:
    return _crlf(f"""From: Mail Delivery System <MAILER-DAEMON@mail.example.org>
To: {EVENTS}
Subject: Undelivered Mail Returned to Sender
Date: Mon, 05 Jan 2026 12:00:00 +0100
Message-ID: {new_id("dsn")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn"

--dsn
Content-Type: text/plain; charset="us-ascii"

I'm sorry to have to inform you that your message could not be delivered.
Did you mean another address?

--dsn
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.org

Final-Recipient: rfc822; nobody@example.org
Action: failed
Status: 5.1.1

--dsn
Content-Type: message/rfc822

{original.decode()}
--dsn--
""")


def out_of_office(sender: str = "bob@example.org") -> bytes:
    return _crlf(f"""From: Bob Example <{sender}>
To: {EVENTS}
Subject: Out of office: Programme of the workshop?
Date: Mon, 05 Jan 2026 12:30:00 +0100
Message-ID: {new_id("ooo")}
Auto-Submitted: auto-replied
X-Autoreply: yes
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

I am away until 12 January with limited access to e-mail. Urgent matters?
Please write to the department office.
""")
