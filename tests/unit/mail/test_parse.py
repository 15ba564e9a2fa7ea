"""Parsing: decoded headers, text, HTML, URLs, attachments, auth results, language, forwards, defects."""

from __future__ import annotations

import dataclasses

import pytest

from guard.mail.message import html_to_text, parse


def test_headers_decoded():
    raw = (
        b"From: =?utf-8?q?N=C3=BAria_Hern=C3=A1ndez?= <NHernandez@CRM.cat>\r\n"
        b"Reply-To: other@example.org\r\n"
        b"Return-Path: <bounce@mx.example.org>\r\n"
        b"To: a@example.org, =?iso-8859-1?q?Jos=E9?= <jose@example.org>\r\n"
        b"Cc: c@example.org\r\n"
        b"Subject: =?iso-8859-1?q?R=E9union?= de =?utf-8?b?cHJvZ3JhbWE=?=\r\n"
        b"Date: Mon, 03 Nov 2025 10:12:00 +0100\r\n"
        b"Message-ID: <abc@crm.cat>\r\n"
        b"List-Id: <seminars.example.org>\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"Precedence: bulk\r\n"
        b"X-Auto-Response-Suppress: All\r\n"
        b"\r\nHello\r\n"
    )
    m = parse(raw)
    assert m.from_.name == "Núria Hernández" and m.from_.addr == "nhernandez@crm.cat"
    assert m.from_.registrable == "crm.cat"
    assert [a.addr for a in m.reply_to] == ["other@example.org"]
    assert m.return_path == "bounce@mx.example.org"
    assert [a.addr for a in m.to] == ["a@example.org", "jose@example.org"] and m.to[1].name == "José"
    assert [a.addr for a in m.cc] == ["c@example.org"]
    assert m.subject == "Réunion de programa"
    assert m.date.year == 2025 and m.date.utcoffset().total_seconds() == 3600
    assert m.message_id == "<abc@crm.cat>"
    assert m.list_headers == {"List-Id": "<seminars.example.org>"}
    assert m.auto_submitted == "auto-replied" and m.precedence == "bulk" and m.x_auto_response_suppress == "All"


def test_immutable():
    m = parse(b"Subject: x\n\ny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.subject = "changed"


def test_null_return_path():
    assert parse(b"Return-Path: <>\nSubject: x\n\ny").return_path == ""
    assert parse(b"Subject: x\n\ny").return_path is None


def test_bare_subject_and_body_file():
    m = parse("Subject: Habitació a Bellaterra\n\nBon dia, voldria saber si hi ha allotjament al campus.\n".encode())
    assert m.subject == "Habitació a Bellaterra"
    assert "allotjament" in m.text
    assert m.language == "ca"


def test_html_to_readable_text_and_links():
    html = (
        "<html><head><style>p{color:red}</style><script>alert(1)</script></head><body>"
        "<p>Dear <b>speaker</b>,</p><div>Book here: <a href='https://crm-housing.com/x'>link</a></div>"
        "<table><tr><td>Hotel</td><td>90&nbsp;EUR</td></tr></table></body></html>"
    )
    links: list[str] = []
    text = html_to_text(html, links)
    assert "Dear speaker," in text
    assert "alert" not in text and "color" not in text
    assert "Hotel 90 EUR" in text
    assert links == ["https://crm-housing.com/x"]
    assert text.index("Dear speaker") < text.index("Book here")
    assert "\n" in text


def test_html_only_message_and_urls_with_registrable_domains():
    raw = (
        b"Content-Type: text/html; charset=utf-8\n\n"
        b"<p>Pay at <a href='https://pay.secure.crm-events.co.uk/a?b=1'>here</a> or www.example.org/x.</p>"
    )
    m = parse(raw)
    assert m.html_seen
    hosts = {u.host: u.registrable for u in m.urls}
    assert hosts["pay.secure.crm-events.co.uk"] == "crm-events.co.uk"
    assert hosts["www.example.org"] == "example.org"


def test_alternative_prefers_plain_but_keeps_html_links():
    raw = (
        b"Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\n\nPlain words\n"
        b"--b\nContent-Type: text/html\n\n<p>HTML words <a href='https://book.example.net/'>x</a></p>\n--b--\n"
    )
    m = parse(raw)
    assert "Plain words" in m.text and "HTML words" not in m.text
    assert any(u.registrable == "example.net" for u in m.urls)


def test_attachments_metadata():
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nSee attached\n"
        b"--b\nContent-Type: application/pdf; name=\"invoice.pdf\"\nContent-Disposition: attachment; filename=\"invoice.pdf\"\n"
        b"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--b--\n"
    )
    m = parse(raw)
    assert len(m.attachments) == 1
    a = m.attachments[0]
    assert a.filename == "invoice.pdf" and a.content_type == "application/pdf" and a.size == 9


def test_authentication_results_first_header_wins():
    raw = (
        b"Authentication-Results: mx.crm.cat; spf=fail smtp.mailfrom=x.com; dkim=none; dmarc=fail header.from=crm.cat\n"
        b"Authentication-Results: forged.example; spf=pass; dkim=pass; dmarc=pass\n"
        b"Subject: x\n\ny"
    )
    auth = parse(raw).auth
    assert (auth.spf, auth.dkim, auth.dmarc, auth.authserv_id) == ("fail", "none", "fail", "mx.crm.cat")


@pytest.mark.parametrize(
    "text,lang",
    [
        ("Dear organisers, I would like to know whether the registration is still open for the workshop.", "en"),
        ("Hola, quisiera saber si todavía es posible inscribirse en el taller de enero, muchas gracias.", "es"),
        ("Bon dia, voldria saber si encara és possible inscriure's al taller de gener, moltes gràcies.", "ca"),
        ("Bonjour, je voudrais savoir s'il est encore possible de s'inscrire à l'atelier de janvier, merci.", "fr"),
    ],
)
def test_language(text, lang):
    assert parse(f"Subject: q\n\n{text}".encode()).language == lang


def test_language_is_detected_on_first_use_only(monkeypatch, classifier):
    """Parsing and classifying never detect the language (no rule or model reads it); the first
    read of ``language`` does, once, on the subject and the author's own text."""
    from guard.mail import language

    calls = []
    real = language.detect
    monkeypatch.setattr(language, "detect", lambda text, **kw: calls.append(text) or real(text, **kw))
    raw = (b"From: Pat <pat@example.org>\r\nSubject: Fwd: Hotel\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
           b"Bonjour, je voudrais savoir si ce message vient de vous, merci beaucoup.\r\n--b\r\n"
           b"Content-Type: message/rfc822\r\n\r\nFrom: x@hotel.example\r\nSubject: Booking\r\n\r\n"
           b"Dear guest, please send your card number to confirm the room.\r\n--b--\r\n")
    msg = parse(raw)
    classifier.classify(msg)
    assert calls == []
    assert msg.language == "fr" and msg.forwarded[0].language == "en"
    assert msg.language == "fr"
    assert calls == [msg.subject + "\n" + msg.text, msg.forwarded[0].subject + "\n" + msg.forwarded[0].text]


FORWARDS = {
    "gmail": (
        "Is this legit?\n\n---------- Forwarded message ---------\nFrom: Royal Housing <desk@royal-housing.example>\n"
        "Date: Mon, 3 Nov 2025 at 10:12\nSubject: Your room\nTo: <me@uni.example>\n\nPlease send your card number.\n"
    ),
    "outlook": (
        "Is this from you?\n\n________________________________\nFrom: Royal Housing <desk@royal-housing.example>\n"
        "Sent: Monday, November 3, 2025 10:12 AM\nTo: Me <me@uni.example>\nSubject: Your room\n\nPlease send your card number.\n"
    ),
    "outlook-es": (
        "¿Es oficial?\n\n-----Original Message-----\nDe: Royal Housing <desk@royal-housing.example>\n"
        "Enviado: lunes, 3 de noviembre de 2025 10:12\nPara: yo@uni.example\nAsunto: Your room\n\nPlease send your card number.\n"
    ),
    "outlook-fr": (
        "Est-ce une arnaque ?\n\nDe : Royal Housing <desk@royal-housing.example>\nEnvoyé : lundi 3 novembre 2025 10:12\n"
        "À : moi@uni.example\nObjet : Your room\n\nPlease send your card number.\n"
    ),
    "apple": (
        "Should I reply?\n\nBegin forwarded message:\n\nFrom: Royal Housing <desk@royal-housing.example>\nSubject: Your room\n"
        "Date: 3 November 2025 at 10:12:00 CET\nTo: me@uni.example\n\nPlease send your card number.\n"
    ),
    "thunderbird": (
        "Aquest correu és vostre?\n\n-------- Forwarded Message --------\nSubject: \tYour room\nDate: \tMon, 3 Nov 2025 10:12:00 +0100\n"
        "From: \tRoyal Housing <desk@royal-housing.example>\nTo: \tme@uni.example\n\nPlease send your card number.\n"
    ),
    "quoted-gmail": (
        "Is this legit?\n\n> ---------- Forwarded message ---------\n> From: Royal Housing <desk@royal-housing.example>\n"
        "> Date: Mon, 3 Nov 2025\n> Subject: Your room\n> To: <me@uni.example>\n>\n> Please send your card number.\n"
    ),
    "outlook-mailto": (
        "Is this from you?\n\n-----Original Message-----\nFrom: Royal Housing [mailto:desk@royal-housing.example]\n"
        "Sent: Monday, November 3, 2025 10:12 AM\nTo: me@uni.example\nSubject: Your room\n\nPlease send your card number.\n"
    ),
}


@pytest.mark.parametrize("style", sorted(FORWARDS))
def test_inline_forwards(style):
    m = parse(("From: P <p@uni.example>\nSubject: Fwd: Your room\n\n" + FORWARDS[style]).encode())
    assert len(m.forwarded) == 1, style
    inner = m.forwarded[0]
    assert inner.from_.addr == "desk@royal-housing.example"
    assert inner.subject == "Your room"
    assert "card number" in inner.text
    # the reporter's own text no longer carries the forwarded words
    assert "card number" not in m.text
    assert "card number" in m.full_text


def test_rfc822_attachment_is_parsed_as_message():
    raw = (
        b"From: P <p@uni.example>\nSubject: Fwd: room\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nIs this real?\n"
        b"--b\nContent-Type: message/rfc822\n\nFrom: Desk <desk@royal-housing.example>\nSubject: Your room\n"
        b"Authentication-Results: mx; spf=fail\n\nSend your CVV.\n--b--\n"
    )
    m = parse(raw)
    assert m.forward_style == "rfc822"
    assert m.forwarded[0].from_.addr == "desk@royal-housing.example"
    assert m.forwarded[0].auth.spf == "fail"
    assert "CVV" in m.forwarded[0].text and "CVV" not in m.text


def test_plain_reply_keeps_the_quoted_thread_as_a_quoted_message():
    m = parse(b"Subject: Re: x\n\nThanks!\n\nOn Mon, 3 Nov 2025, events@crm.cat wrote:\n> Your registration is confirmed.\n")
    assert m.forward_style == "quoted"
    assert m.forwarded[0].from_.addr == "events@crm.cat"
    assert "registration is confirmed" in m.forwarded[0].text
    assert m.text.strip() == "Thanks!"


@pytest.mark.parametrize(
    "raw,defect",
    [
        (b"Content-Type: text/plain; charset=no-such-charset\n\nhello", "unknown charset"),
        (b"Content-Type: text/plain; charset=us-ascii\n\ncaf\xc3\xa9", "bytes invalid in declared charset"),
        (b"Subject: caf\xe9\n\nbody", "8-bit header"),
        (b"Subject: x\n\nbody", "missing From header"),
        (b"Date: not a date\nFrom: a@b.c\n\nbody", "unparseable Date header"),
        (b"Content-Type: multipart/mixed\n\nno boundary at all", None),
    ],
)
def test_defects_recorded_not_raised(raw, defect):
    m = parse(raw)
    if defect:
        assert any(defect in d for d in m.defects), m.defects


def test_lying_charset_still_gives_text():
    m = parse(b"Content-Type: text/plain; charset=us-ascii\n\nPrenotazione caf\xc3\xa9")
    assert "caf\u00e9" in m.text


def test_deep_nesting_and_many_parts_are_bounded():
    depth = 60
    raw = b"From: a@b.c\n"
    for i in range(depth):
        raw += f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n".encode()
    raw += b"Content-Type: text/plain\n\ndeep text\n"
    m = parse(raw)
    assert any("too deep" in d for d in m.defects)

    parts = b"".join(b"--b\nContent-Type: text/plain\n\npart %d\n" % i for i in range(2000))
    m = parse(b"From: a@b.c\nContent-Type: multipart/mixed; boundary=b\n\n" + parts + b"--b--\n")
    assert any("MIME parts" in d for d in m.defects)


def test_huge_body_is_truncated():
    m = parse(b"Subject: big\n\n" + b"word " * 2_000_000)
    assert len(m.full_text) <= 200_000


@pytest.mark.parametrize("raw", [b"", b"\x00" * 50, b"\xff\xfe\xfd", b"From:\n\n", b"::::\n\n", b"Subject: =?utf-8?b?!!!?=\n\nx"])
def test_garbage_never_raises(raw):
    m = parse(raw)
    assert isinstance(m.defects, tuple)


# -- addresses as the RFCs say (issue 13, item 3) ---------------------------------------------------


def test_an_encoded_display_name_never_becomes_the_address():
    # the encoded text reads "housing@crm.cat, ": a display name, not an address (RFC 2047 section 5)
    raw = (b"From: =?utf-8?b?aG91c2luZ0Bjcm0uY2F0LCA=?= <desk@stays.example>\r\n"
           b"To: events@crm.cat\r\nSubject: Your room\r\n\r\nPay now\r\n")
    m = parse(raw)
    assert m.from_.addr == "desk@stays.example"
    assert m.from_.name == "housing@crm.cat,"
    assert m.from_.registrable == "stays.example"


def test_a_decoded_display_name_cannot_add_a_recipient():
    # "x\r\nBcc: victim@evil.example" encoded in the display name of the only To address
    raw = (b"From: =?utf-8?q?Pat=0D=0ABcc=3A_victim=40evil.example?= <pat@example.org>\r\n"
           b"To: =?utf-8?q?a=2C_b=40evil.example?= <events@crm.cat>\r\nSubject: x\r\n\r\nhi\r\n")
    m = parse(raw)
    assert [a.addr for a in m.to] == ["events@crm.cat"]
    assert m.from_.addr == "pat@example.org"
    assert "\r" not in m.from_.name and "\n" not in m.from_.name
    assert m.from_.name == "Pat Bcc: victim@evil.example"


def test_an_unquoted_address_in_the_display_part_is_not_the_sender():
    m = parse(b"From: housing@crm.cat <desk@stays.example>\r\nSubject: x\r\n\r\nhi\r\n")
    assert m.from_.addr == "desk@stays.example"


def test_quoted_commas_groups_and_comments():
    m = parse(b'From: pat@example.org (Pat Example)\r\nTo: "Doe, Jane" <jane@example.org>, Team: a@x.org, b@y.org;\r\n'
              b"Cc: undisclosed-recipients:;\r\nSubject: x\r\n\r\nhi\r\n")
    assert (m.from_.name, m.from_.addr) == ("Pat Example", "pat@example.org")
    assert [(a.name, a.addr) for a in m.to] == [("Doe, Jane", "jane@example.org"), ("", "a@x.org"), ("", "b@y.org")]
    assert m.cc == ()


def test_several_from_headers_are_a_defect():
    m = parse(b"From: a@stays.example\r\nFrom: housing@crm.cat\r\nSubject: x\r\n\r\nhi\r\n")
    assert m.from_.addr == "a@stays.example" and "several From headers" in m.defects


def test_utf8_addresses_are_kept_as_rfc_6532_writes_them():
    m = parse("From: Jörg <jörg@exämple.de>\r\nSubject: x\r\n\r\nhi\r\n".encode())
    assert (m.from_.name, m.from_.addr) == ("Jörg", "jörg@exämple.de")


# -- Authentication-Results (RFC 8601) ----------------------------------------------------------------


def test_authentication_results_are_kept_in_order_with_their_properties():
    raw = (b"Authentication-Results: mx.crm.cat 1; spf=pass (mx.crm.cat: 1.2.3.4 is permitted) smtp.mailfrom=\"b@x.org\";\r\n"
           b"\tdkim = pass (2048-bit key) header.d=x.org header.s=s1; dmarc=pass (p=NONE) header.from=x.org\r\n"
           b"Authentication-Results: forged.example; dmarc=pass header.from=crm.cat\r\n"
           b"From: b@x.org\r\nSubject: x\r\n\r\ny")
    auth = parse(raw).auth
    assert [h.authserv_id for h in auth.headers] == ["mx.crm.cat", "forged.example"]
    spf, dkim, dmarc = auth.headers[0].methods
    assert (spf.method, spf.result, spf.prop("smtp.mailfrom")) == ("spf", "pass", "b@x.org")
    assert (dkim.result, dkim.prop("header.d"), dkim.prop("header.s")) == ("pass", "x.org", "s1")
    assert (dmarc.result, dmarc.prop("header.from")) == ("pass", "x.org")
    assert auth.check(["mx.crm.cat"], "x.org").passed
    assert auth.check(["mx.crm.cat"], "mail.x.org").passed  # relaxed alignment
    assert not auth.check(["mx.crm.cat"], "crm.cat").passed  # header.from is not the From domain


def test_a_trusted_looking_header_below_another_servers_is_ignored():
    raw = (b"Authentication-Results: relay.example; spf=none\r\n"
           b"Authentication-Results: mx.crm.cat; dmarc=pass header.from=crm.cat\r\n"
           b"From: housing@crm.cat\r\nSubject: x\r\n\r\ny")
    check = parse(raw).auth.check(["mx.crm.cat"], "crm.cat")
    assert not check.passed and "relay.example" in check.reason


def test_dmarc_failure_from_the_trusted_server_wins_over_an_aligned_pass():
    raw = (b"Authentication-Results: mx.crm.cat; dkim=pass header.d=crm.cat; dmarc=fail (p=reject) header.from=crm.cat\r\n"
           b"From: housing@crm.cat\r\nSubject: x\r\n\r\ny")
    check = parse(raw).auth.check(["mx.crm.cat"], "crm.cat")
    assert (check.passed, check.reason) == (False, "dmarc=fail")


def test_the_encoded_name_trick_gets_no_official_sender_bonus(classifier):
    raw = (b"From: =?utf-8?b?aG91c2luZ0Bjcm0uY2F0LCA=?= <desk@stays.example>\r\nTo: events@crm.cat\r\n"
           b"Subject: Your room for the CRM workshop\r\nMessage-ID: <t@stays.example>\r\n\r\n"
           b"Dear participant, your room is held. Please send your credit card number and expiry date "
           b"to confirm the reservation today.\r\n")
    verdict = classifier.classify(parse(raw))
    assert not {"OFFICIAL_SENDER", "OFFICIAL_SENDER_AUTHENTICATED"} & {r.rule for r in verdict.reasons}


def test_space_runs_pattern_is_the_reference():
    """html_to_text's space pattern, which leaves lone spaces alone, gives the plain pattern's text."""
    import random

    from guard.mail.message import _SPACES, _SPACES_REFERENCE

    rnd = random.Random(3)
    texts = ["", " ", "  ", "\t", "\u00a0", " \t", "\t ", "a b", "a  b\t\tc\u00a0 d \u00a0e", " x "]
    texts += ["".join(rnd.choice(" \t\u00a0ab\n") for _ in range(rnd.randint(0, 30))) for _ in range(20_000)]
    for text in texts:
        assert _SPACES.sub(" ", text) == _SPACES_REFERENCE.sub(" ", text), repr(text)
