"""Parsing: raw bytes in, an immutable :class:`ParsedMessage` out.

``parse()`` never raises. Whatever is wrong with the input (broken MIME,
unknown or lying charsets, 8-bit headers, missing headers, absurd nesting) is
recorded in ``ParsedMessage.defects`` and parsing goes on with what can be
read. Rules can match on defects, and the coordinator sees them.

The stdlib parser runs with the ``compat32`` policy because it is the one that
never raises on header access; headers are decoded here, defensively.

Bounds keep hostile input cheap: at most ``MAX_PARTS`` MIME parts are looked
at, nesting deeper than ``MAX_DEPTH`` is not followed, at most
``MAX_TEXT_CHARS`` characters of body text are kept, and at most
``MAX_FORWARDS`` embedded messages are parsed, ``MAX_FORWARD_DEPTH`` deep.
Only the first ``MAX_PARSE_BYTES`` of a message go to the MIME parser.
"""

from __future__ import annotations

import dataclasses

import email
import email.header
import email.message
import email.policy
import email.utils
import functools
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from selectolax.lexbor import LexborHTMLParser

from guard.mail import domains

from guard.mail import forwards

from guard.mail import language
from guard.mail.textutil import decode_bytes, may_hold_link
from guard.pickling import fast_pickle

MAX_PARTS = 500
MAX_DEPTH = 12
MAX_TEXT_CHARS = 200_000
MAX_HTML_BYTES = 2_000_000
MAX_FORWARDS = 5
MAX_FORWARD_DEPTH = 2
MAX_URLS = 200
MAX_HEADER_CHARS = 4000
#: only this much of a message is handed to the MIME parser (email builds several copies of what it parses)
MAX_PARSE_BYTES = 10_000_000


@fast_pickle
@dataclass(frozen=True, slots=True)
class Address:
    name: str
    addr: str  # lower-cased; "" for the null sender

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2] if "@" in self.addr else ""

    @property
    def local(self) -> str:
        return self.addr.rpartition("@")[0] if "@" in self.addr else self.addr

    @property
    def registrable(self) -> str:
        return domains.registrable(self.domain) if self.domain else ""

    def __str__(self) -> str:
        return f"{self.name} <{self.addr}>" if self.name else self.addr


@fast_pickle
@dataclass(frozen=True, slots=True)
class Url:
    url: str
    host: str
    registrable: str


@fast_pickle
@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@fast_pickle
@dataclass(frozen=True, slots=True)
class AuthMethod:
    """One result of an Authentication-Results header (RFC 8601 section 2.2): ``dkim=pass header.d=x.org``."""

    method: str  # lower case: spf, dkim, dmarc, ...
    result: str  # lower case: pass, fail, none, ...
    props: tuple[tuple[str, str], ...] = ()  # (ptype.property lower-cased, value): ("header.d", "x.org")

    def prop(self, name: str) -> str | None:
        for k, v in self.props:
            if k == name:
                return v
        return None

    def identity(self) -> str | None:
        """The domain this result is about: DMARC's header.from, DKIM's signing domain (header.d or
        header.i), SPF's envelope domain; None when the header names none (DMARC: the From domain)."""
        if self.method == "dmarc":
            return self.prop("header.from")
        if self.method == "dkim":
            return self.prop("header.d") or (self.prop("header.i") or "").rpartition("@")[2] or ""
        if self.method == "spf":
            return (self.prop("smtp.mailfrom") or "").rpartition("@")[2]
        return ""

    def vouches_for(self, from_domain: str) -> bool:
        """A pass aligned with the From domain (relaxed, RFC 7489 section 3.1)."""
        if self.result != "pass":
            return False
        ident = self.identity()
        return (ident is None and self.method == "dmarc") or bool(ident and _aligned(ident, from_domain))


@fast_pickle
@dataclass(frozen=True, slots=True)
class AuthHeader:
    authserv_id: str  # lower case
    methods: tuple[AuthMethod, ...] = ()


@fast_pickle
@dataclass(frozen=True, slots=True)
class AuthCheck:
    """Whether a trusted receiving server authenticated the From domain (see :meth:`AuthResults.check`)."""

    passed: bool
    reason: str


def _aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment (RFC 7489 section 3.1): the same registrable (organisational) domain."""
    domain, from_domain = domain.strip().strip(".").lower(), from_domain.strip().strip(".").lower()
    if not domain or not from_domain:
        return False
    return domain == from_domain or domains.registrable(domain) == domains.registrable(from_domain)


@fast_pickle
@dataclass(frozen=True, slots=True)
class AuthResults:
    """SPF, DKIM and DMARC results, and every Authentication-Results header in order (top first).

    ``spf``, ``dkim``, ``dmarc`` and ``authserv_id`` come from the first (topmost) header, the
    one a receiving server adds last; they are hints for classification only. Whether a reply
    may go out is decided by :meth:`check`, which believes only the headers of the configured
    authserv-ids above any other one (RFC 8601 section 5: a receiving server prepends its header
    and removes or ignores forged ones below; whatever the sender wrote sits below it).
    """

    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None
    authserv_id: str | None = None
    headers: tuple[AuthHeader, ...] = ()

    def trusted(self, authserv_ids) -> tuple[AuthHeader, ...]:
        """The topmost run of headers whose authserv-id is one of ``authserv_ids``; nothing below the
        first header of another authserv-id counts (it may be the sender's)."""
        ids = {i.strip().strip(".").lower() for i in authserv_ids}
        out = []
        for h in self.headers:
            if h.authserv_id not in ids:
                break
            out.append(h)
        return tuple(out)

    def check(self, authserv_ids, from_domain: str) -> AuthCheck:
        """Passed when a trusted server reports DMARC pass for the From domain, or SPF or DKIM pass
        aligned with it (relaxed: the same registrable domain), and no DMARC failure."""
        ids = [i for i in authserv_ids if i.strip()]
        if not ids:
            return AuthCheck(False, "no trusted authserv-id configured ([daemon] trusted_authserv_ids)")
        run = self.trusted(ids)
        if not run:
            if self.headers:
                return AuthCheck(False, f"no Authentication-Results from a trusted server (the topmost is from "
                                        f"{self.headers[0].authserv_id[:60]!r})")
            return AuthCheck(False, "no Authentication-Results header")
        if not from_domain:
            return AuthCheck(False, "no From domain to authenticate")
        methods = [m for h in run for m in h.methods]
        for m in methods:
            if m.method == "dmarc" and m.result not in ("pass", "none", "bestguesspass"):
                return AuthCheck(False, f"dmarc={m.result[:20]}")
        seen: list[str] = []
        for m in methods:
            if m.method not in ("spf", "dkim", "dmarc"):
                continue
            if m.result != "pass":
                seen.append(f"{m.method}={m.result[:20]}")
                continue
            ident = m.identity()
            if m.vouches_for(from_domain):
                return AuthCheck(True, "dmarc=pass" if m.method == "dmarc" else f"{m.method}=pass aligned ({ident[:60]})")
            if m.method == "dmarc":
                seen.append(f"dmarc=pass for {ident[:60]} (not the From domain)")
            else:
                seen.append(f"{m.method}=pass for {ident[:60] or '?'} (not aligned with From)")
        return AuthCheck(False, ", ".join(seen) or "no SPF, DKIM or DMARC result")


@dataclass(frozen=True)
class ParsedMessage:
    headers: tuple[tuple[str, str], ...]
    from_: Address | None
    sender: Address | None
    reply_to: tuple[Address, ...]
    return_path: str | None  # None: absent; "": the null sender <>
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    subject: str
    date: datetime | None
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    content_type: str
    report_type: str | None
    text: str  # the author's own text (inline-forwarded and ">"-quoted parts removed)
    full_text: str  # all readable body text, inline forwards included (message/rfc822 parts are in ``forwarded``)
    html_seen: bool
    urls: tuple[Url, ...]
    attachments: tuple[Attachment, ...]
    auth: AuthResults
    forwarded: tuple["ParsedMessage", ...]
    forward_style: str | None  # how the first embedded message was found
    defects: tuple[str, ...]
    size: int
    #: the addresses of Resent-To and Resent-Cc (RFC 5322 section 3.6.6)
    resent: tuple[Address, ...] = ()
    _lower: dict = field(default_factory=dict, repr=False, compare=False)

    @functools.cached_property
    def language(self) -> str:
        """ISO 639-1 code of the subject and the author's own text, "und" when there is too little to tell.

        Read on first use, not when the message is parsed: no rule or model reads it, only the choice
        of a reply's language does (:mod:`guard.respond.languages`), and detecting it cost about a sixth
        of parsing and classifying a message (``bench/throughput.py``; bench/README.md)."""
        return language.detect(self.subject + "\n" + self.text)

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name: str) -> tuple[str, ...]:
        if not self._lower:
            grouped: dict[str, list[str]] = {}
            for k, v in self.headers:
                grouped.setdefault(k.lower(), []).append(v)
            self._lower.update({k: tuple(v) for k, v in grouped.items()})
        return self._lower.get(name.lower(), ())

    @property
    def list_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers if k.lower().startswith("list-")}

    @property
    def auto_submitted(self) -> str | None:
        return self.header("Auto-Submitted")

    @property
    def precedence(self) -> str | None:
        return self.header("Precedence")

    @property
    def x_auto_response_suppress(self) -> str | None:
        return self.header("X-Auto-Response-Suppress")


def parse(raw: bytes | str, *, _depth: int = 0) -> ParsedMessage:
    """Parse one message. Never raises (see the module docstring)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogateescape")
    try:
        return _parse(raw, _depth)
    except RecursionError:
        return _empty(raw, "nesting too deep to parse")
    except Exception as exc:  # last resort: the contract is "never raises"
        return _empty(raw, f"parser failure: {type(exc).__name__}")


def _empty(raw: bytes, defect: str) -> ParsedMessage:
    text, _ = decode_bytes(raw[:MAX_TEXT_CHARS], None)
    return ParsedMessage(
        headers=(), from_=None, sender=None, reply_to=(), return_path=None, to=(), cc=(), subject="",
        date=None, message_id=None, in_reply_to=None, references=(), content_type="text/plain",
        report_type=None, text=text, full_text=text, html_seen=False, urls=(), attachments=(),
        auth=AuthResults(), forwarded=(), forward_style=None, defects=(defect,), size=len(raw),
    )


_LEADING_FROM = re.compile(rb"^From [^\r\n]*\r?\n")


def _parse(raw: bytes, depth: int) -> ParsedMessage:
    size = len(raw)
    body_bytes = _LEADING_FROM.sub(b"", raw, count=1) if raw.startswith(b"From ") else raw
    cut = len(body_bytes) > MAX_PARSE_BYTES
    if cut:
        body_bytes = body_bytes[:MAX_PARSE_BYTES]
    msg = email.message_from_bytes(body_bytes, policy=email.policy.compat32)
    parsed = _from_message(msg, size, depth)
    if cut:
        parsed = dataclasses.replace(parsed, defects=(*parsed.defects, f"larger than {MAX_PARSE_BYTES} bytes: only "
                                                      "the beginning was parsed"))
    return parsed


def _from_message(msg: email.message.Message, size: int, depth: int) -> ParsedMessage:
    defects: list[str] = []
    for d in getattr(msg, "defects", []) or []:
        defects.append(type(d).__name__)

    raw_items = list(msg.raw_items())
    headers = tuple((str(k), _decode_header(v, defects)) for k, v in raw_items)
    get = {}
    for k, v in headers:
        get.setdefault(k.lower(), v)
    # address headers are parsed from the raw value: encoded words are decoded in display names only
    raw_get: dict[str, list[str]] = {}
    for k, v in raw_items:
        if str(k).lower() in _ADDRESS_HEADERS:
            raw_get.setdefault(str(k).lower(), []).append(_raw_header(v, defects))

    def first_raw(name: str) -> str | None:
        vals = raw_get.get(name)
        return vals[0] if vals else None

    from_ = _first_address(first_raw("from"), defects, "From")
    if "from" not in get:
        defects.append("missing From header")
    elif len(raw_get.get("from", ())) > 1:
        defects.append("several From headers")
    sender = _first_address(first_raw("sender"), defects, "Sender")
    reply_to = _addresses(first_raw("reply-to"))
    rp = get.get("return-path")
    return_path = None
    if rp is not None:
        _, addr = email.utils.parseaddr(rp)
        return_path = addr.strip().lower()
    date = None
    if "date" in get:
        try:
            date = email.utils.parsedate_to_datetime(get["date"])
            if date is not None and date.tzinfo is None:
                date = date.replace(tzinfo=timezone.utc)
        except (TypeError, ValueError, IndexError, OverflowError):
            defects.append("unparseable Date header")
    mid = get.get("message-id")
    mid = mid.strip() if mid else None
    refs = tuple(re.findall(r"<[^<>\s]+>", get.get("references", "")))[:50]

    ctype = _safe(msg.get_content_type, "text/plain")
    report_type = msg.get_param("report-type") if ctype == "multipart/report" else None
    if isinstance(report_type, tuple):
        report_type = None

    walker = _BodyWalker(defects, depth)
    walker.walk(msg, 0)

    own_parts: list[str] = []
    # a delivery or read report carries the returned message (or its headers) as data, not as a
    # participant's forward: it is never an embedded message
    machine_report = ctype == "multipart/report"
    fwd_messages = [] if machine_report else list(walker.rfc822)
    style = "rfc822" if fwd_messages else None
    full_text = "\n".join(walker.texts)[:MAX_TEXT_CHARS]
    own = full_text
    if depth < MAX_FORWARD_DEPTH and not machine_report:
        split = forwards.split_inline(full_text)
        if split is not None:
            own = split.own_text
            if len(fwd_messages) < MAX_FORWARDS:
                fwd_messages.append(split.embedded)
                style = style or split.style
    own_parts.append(forwards.strip_quoted(own))
    own_text = "\n".join(own_parts).strip()

    forwarded = tuple(
        parse(m, _depth=depth + 1) if isinstance(m, (bytes, str)) else _from_message_safe(m, depth + 1)
        for m in fwd_messages[:MAX_FORWARDS]
    )

    # a report's own links are the reporter's; the forwarded ones belong to the inner message
    urls = _urls(own_text, walker.hrefs if own is full_text else [])
    subject = get.get("subject", "")
    return ParsedMessage(
        headers=headers,
        from_=from_,
        sender=sender,
        reply_to=reply_to,
        return_path=return_path,
        to=_addresses(first_raw("to")),
        cc=_addresses(first_raw("cc")),
        subject=subject,
        date=date,
        message_id=mid,
        in_reply_to=(get.get("in-reply-to") or "").strip() or None,
        references=refs,
        content_type=ctype,
        report_type=report_type.lower() if isinstance(report_type, str) else None,
        text=own_text,
        full_text=full_text,
        html_seen=walker.html_seen,
        urls=urls,
        attachments=tuple(walker.attachments),
        auth=_auth_results(headers),
        forwarded=forwarded,
        forward_style=style,
        defects=tuple(dict.fromkeys(defects)),
        size=size,
        resent=tuple(a for name in ("resent-to", "resent-cc") for v in raw_get.get(name, ())
                     for a in _addresses(v))[:100],
    )


def _from_message_safe(m: email.message.Message, depth: int) -> ParsedMessage:
    try:
        return _from_message(m, 0, depth)
    except Exception as exc:
        return _empty(b"", f"embedded message unreadable: {type(exc).__name__}")


def _safe(fn, default):
    try:
        return fn()
    except Exception:
        return default


def _decode_header(value, defects: list[str]) -> str:
    """Decode an RFC 2047 header value; raw 8-bit bytes are read as UTF-8 or cp1252."""
    try:
        if isinstance(value, email.header.Header):
            value = str(value)
        value = str(value)
        if not value.isascii() and _SURROGATE_ESCAPES.search(value):  # raw 8-bit bytes
            raw = value.encode("utf-8", errors="surrogateescape")
            value, _ = decode_bytes(raw, None)
            defects.append("8-bit header")
        if "=?" in value:
            parts = []
            for chunk, cs in email.header.decode_header(value):
                if isinstance(chunk, bytes):
                    text, bad = decode_bytes(chunk, cs)
                    if bad:
                        defects.append(f"header: {bad}")
                    parts.append(text)
                else:
                    parts.append(chunk)
            value = "".join(parts)
        value = value.replace("\r", "").replace("\n", "")
        return value[:MAX_HEADER_CHARS].strip()
    except Exception:
        defects.append("undecodable header")
        return str(value)[:MAX_HEADER_CHARS] if value is not None else ""


#: the code points surrogateescape gives raw 8-bit header bytes (U+DC80-U+DCFF); one regex scan
#: instead of a Python loop over every character of every header
_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")
_ADDRESS_HEADERS = frozenset({"from", "sender", "reply-to", "to", "cc", "resent-to", "resent-cc"})
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_WS = re.compile(r"\s+")
MAX_ADDRESSES = 100


def _raw_header(value, defects: list[str]) -> str:
    """An address header's value as sent, unfolded, encoded words left as they are; raw 8-bit
    bytes (RFC 6532 UTF-8, or a legacy charset) are read as UTF-8 or cp1252."""
    try:
        value = str(value)
        if not value.isascii() and _SURROGATE_ESCAPES.search(value):  # raw 8-bit bytes
            value, _ = decode_bytes(value.encode("utf-8", errors="surrogateescape"), None)
        return value.replace("\r", "").replace("\n", "")[:MAX_HEADER_CHARS]
    except Exception:
        defects.append("undecodable header")
        return ""


def _split_mailboxes(value: str) -> list[tuple[str, str]] | None:
    """RFC 5322 address-list -> [(display part, address)], linear: commas inside quoted strings,
    comments and angle brackets separate nothing; group names (``name: ...;``) are dropped.
    None when a quoted string, comment or angle bracket is never closed."""
    out: list[tuple[str, str]] = []
    name: list[str] = []
    angle: list[str] | None = None
    last_angle: str | None = None
    comment: list[str] = []
    depth, quoted, escaped = 0, False, False

    def flush() -> None:
        nonlocal name, last_angle, angle, comment
        display = "".join(name).strip()
        if angle is not None:  # "<x@y" never closed
            last_angle = "".join(angle)
        if last_angle is not None:
            addr = last_angle.rpartition(":")[2] if ":" in last_angle else last_angle  # <@route:x@y>
            out.append((display, addr.strip()))
        elif display:
            # a bare addr-spec; an old-style "(Name)" comment is its display name
            out.append(("".join(comment).strip(), _WS.sub("", display)))
        name, angle, last_angle, comment = [], None, None, []

    for ch in value:
        if escaped:
            escaped = False
            (comment if depth else angle if angle is not None else name).append(ch)
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
            continue
        if depth:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if not depth:
                    continue
            if depth:
                comment.append(ch)
            continue
        if quoted:
            if ch == '"':
                quoted = False
            else:
                name.append(ch)
            continue
        if angle is not None:
            if ch == ">":
                last_angle, angle = "".join(angle), None
            else:
                angle.append(ch)
            continue
        if ch == '"':
            quoted = True
        elif ch == "(":
            depth = 1
        elif ch == "<":
            angle = []
        elif ch == ",":
            flush()
        elif ch == ":" and last_angle is None:
            name, comment = [], []  # a group's display name: not an address
        elif ch == ";":
            flush()
        else:
            name.append(ch)
        if len(out) >= MAX_ADDRESSES:
            break
    if quoted or depth or angle is not None:
        return None
    flush()
    return out[:MAX_ADDRESSES]


def _decode_display_name(name: str) -> str:
    """RFC 2047 encoded words decoded in a display name (only there); control characters (CR, LF,
    NUL ...) become spaces: a display name is text, never header or address syntax."""
    if "=?" in name:
        try:
            parts = []
            for chunk, cs in email.header.decode_header(name):
                parts.append(decode_bytes(chunk, cs)[0] if isinstance(chunk, bytes) else chunk)
            name = "".join(parts)
        except Exception:
            pass
    return _WS.sub(" ", _CONTROLS.sub(" ", name)).strip()[:200]


def _addresses(value: str | None) -> tuple[Address, ...]:
    """The addresses of an address header's raw value (see :func:`_split_mailboxes`)."""
    if not value:
        return ()
    pairs = _split_mailboxes(value)
    if pairs is None:  # unbalanced: the lenient stdlib split, still of the raw value (names not decoded yet)
        try:
            pairs = [(n, a.strip("<>")) for n, a in email.utils.getaddresses([value])[:MAX_ADDRESSES]]
        except Exception:
            return ()
    out = []
    for display, addr in pairs:
        addr = _CONTROLS.sub("", addr).strip().lower()
        name = _decode_display_name(display)
        if addr or name:
            out.append(Address(name, addr))
    return tuple(out)


def _first_address(value: str | None, defects: list[str], label: str) -> Address | None:
    addrs = _addresses(value)
    if value and not addrs:
        defects.append(f"unparseable {label} header")
    return addrs[0] if addrs else None


class _BodyWalker:
    """Collects text, attachments, links and embedded messages from a MIME tree."""

    def __init__(self, defects: list[str], depth: int) -> None:
        self.defects = defects
        self.depth = depth
        self.texts: list[str] = []
        self.text_len = 0
        self.hrefs: list[str] = []
        self.attachments: list[Attachment] = []
        self.rfc822: list[email.message.Message] = []
        self.parts_seen = 0
        self.html_seen = False

    def walk(self, part: email.message.Message, level: int) -> None:
        self.parts_seen += 1
        if self.parts_seen > MAX_PARTS:
            if self.parts_seen == MAX_PARTS + 1:
                self.defects.append(f"more than {MAX_PARTS} MIME parts; the rest ignored")
            return
        if level > MAX_DEPTH:
            self.defects.append("MIME nesting too deep; inner parts ignored")
            return
        ctype = _safe(part.get_content_type, "text/plain")
        maintype = ctype.split("/", 1)[0]
        if part.is_multipart() and maintype == "multipart":
            children = part.get_payload()
            if not isinstance(children, list):
                return
            if ctype == "multipart/alternative":
                self._alternative(children, level)
            else:
                for child in children:
                    if isinstance(child, email.message.Message):
                        self.walk(child, level + 1)
            return
        if ctype == "message/rfc822" or (ctype.startswith("message/") and part.is_multipart()):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, email.message.Message) and len(self.rfc822) < MAX_FORWARDS and self.depth < MAX_FORWARD_DEPTH:
                self.rfc822.append(inner)
            return
        filename = _filename(part)
        if ctype == "text/calendar":
            # an invitation or a calendar's reply is data a calendar generated, not prose
            data = self._payload(part)
            self.attachments.append(Attachment(filename or "", ctype, len(data) if data else 0))
            return
        disposition = (_safe(part.get_content_disposition, None) or "").lower()
        if maintype == "text" and disposition != "attachment" and not (filename and ctype not in ("text/plain", "text/html")):
            self._text_leaf(part, ctype)
            return
        if ctype in ("message/delivery-status", "message/disposition-notification", "text/rfc822-headers"):
            # machine-readable report data: kept out of the text a person wrote (and out of forwards)
            return
        data = self._payload(part)
        self.attachments.append(Attachment(filename or "", ctype, len(data) if data else 0))

    def _alternative(self, children: list, level: int) -> None:
        msgs = [c for c in children if isinstance(c, email.message.Message)]
        plain = [c for c in msgs if _safe(c.get_content_type, "") == "text/plain"]
        if plain and any(self._payload(c).strip() for c in plain):
            # still harvest links from the HTML alternative: they are what a reader clicks
            for c in msgs:
                if _safe(c.get_content_type, "") == "text/html":
                    self._html_links(c)
            self.walk(plain[-1], level + 1)
            for c in msgs:
                if c not in plain and _safe(c.get_content_type, "") != "text/html":
                    self.walk(c, level + 1)
            return
        for c in msgs:
            self.walk(c, level + 1)

    def _payload(self, part: email.message.Message) -> bytes:
        try:
            data = part.get_payload(decode=True)
        except Exception:
            self.defects.append("undecodable transfer encoding")
            return b""
        if data is None:
            return b""
        for d in getattr(part, "defects", []) or []:
            self.defects.append(type(d).__name__)
        return data

    def _decode(self, part: email.message.Message, data: bytes) -> str:
        charset = _safe(part.get_content_charset, None)
        text, bad = decode_bytes(data, charset)
        if bad:
            self.defects.append(bad)
        return text

    def _html_links(self, part: email.message.Message) -> None:
        data = self._payload(part)[:MAX_HTML_BYTES]
        html_to_text(self._decode(part, data), self.hrefs)

    def _text_leaf(self, part: email.message.Message, ctype: str) -> None:
        if self.text_len >= MAX_TEXT_CHARS:
            return
        data = self._payload(part)
        if ctype == "text/html":
            self.html_seen = True
            text = html_to_text(self._decode(part, data[:MAX_HTML_BYTES]), self.hrefs)
        else:
            text = self._decode(part, data[: MAX_TEXT_CHARS * 4])
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\x00" in text:
            text = text.replace("\x00", "")
            self.defects.append("NUL characters in text")
        text = text[: MAX_TEXT_CHARS - self.text_len]
        self.text_len += len(text)
        self.texts.append(text)


def _filename(part: email.message.Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    if name is None:
        return None
    return _decode_header(name, []) if isinstance(name, str) else None


_BLOCK_TAGS = "br,p,div,tr,li,h1,h2,h3,h4,h5,h6,table,blockquote,pre,hr,dt,dd,section,article,header,footer"
#: elements that begin on a line of their own even after inline text (Thunderbird's forward marker
#: runs straight into its header table); not div or p, whose blank line would split a header block
_STARTS_A_LINE = "table,hr,ul,ol,dl,pre,h1,h2,h3,h4,h5,h6"
#: HTML with more tags than this is not given to the HTML parser (whose work grows with nesting):
#: its tags are stripped by a linear scan instead
MAX_HTML_TAGS = 20_000
_QUOTE_OPEN, _QUOTE_CLOSE = "\x02", "\x03"
_TAG = re.compile(r"<[^<>]{0,2000}>")
#: removed from the HTML first (they mark blockquotes in the text); a ``str.replace`` each, only when
#: present: ``str.translate`` looks every character of non-ASCII text up in a dictionary
_CONTROLS_REMOVED = (_QUOTE_OPEN, _QUOTE_CLOSE)
_BLANK_LINES = re.compile(r"\n[ \t\u00a0]*(?:\n[ \t\u00a0]*)+")
#: runs of spaces, tabs and no-break spaces, each to become one space: written to leave out a lone
#: space (which would become itself), so that ``sub`` replaces at far fewer places; the same text
#: as ``[ \t\u00a0]+`` (_SPACES_REFERENCE, tests/unit/mail/test_parse.py)
_SPACES = re.compile(r" [ \t\u00a0]+|[\t\u00a0][ \t\u00a0]*")
_SPACES_REFERENCE = re.compile(r"[ \t\u00a0]+")


def html_to_text(html: str, hrefs: list[str] | None = None) -> str:
    """Readable text from HTML with the Lexbor parser (selectolax); links go to ``hrefs``.

    ``<blockquote>`` content comes out as ">"-quoted lines, as a plain-text client quotes, so that
    a quoted thread in HTML-only mail is found as an embedded message. HTML with more than
    :data:`MAX_HTML_TAGS` tags is reduced to text by a linear tag strip instead of the parser."""
    html = html[:MAX_HTML_BYTES]
    for mark in _CONTROLS_REMOVED:
        if mark in html:
            html = html.replace(mark, "")
    if html.count("<") > MAX_HTML_TAGS:
        return _BLANK_LINES.sub("\n\n", _SPACES.sub(" ", _TAG.sub(" ", html))).strip()
    try:
        tree = LexborHTMLParser(html)
        for node in tree.css("blockquote"):
            node.insert_before(_QUOTE_OPEN)
            node.insert_after(_QUOTE_CLOSE)
        for node in tree.css("script,style,head,title,noscript,template"):
            node.decompose()
        if hrefs is not None:
            for a in tree.css("a[href]"):
                href = a.attributes.get("href") or ""
                if href and len(hrefs) < MAX_URLS:
                    hrefs.append(href.strip())
        for node in tree.css(_BLOCK_TAGS):
            node.insert_after("\n")
        for node in tree.css(_STARTS_A_LINE):
            node.insert_before("\n")
        for node in tree.css("td,th"):
            node.insert_after(" ")
        root = tree.body or tree.root
        text = root.text(separator="", strip=False) if root is not None else ""
    except Exception:
        return ""
    text = _SPACES.sub(" ", text)
    if _QUOTE_OPEN in text:
        text = _quote_blockquotes(text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def _quote_blockquotes(text: str) -> str:
    """Lines between the blockquote marks get one ">" per level of nesting (bounded at 20)."""
    text = text.replace(_QUOTE_OPEN, "\n" + _QUOTE_OPEN + "\n").replace(_QUOTE_CLOSE, "\n" + _QUOTE_CLOSE + "\n")
    out, depth = [], 0
    for line in text.split("\n"):
        if line == _QUOTE_OPEN:
            depth += 1
        elif line == _QUOTE_CLOSE:
            depth = max(0, depth - 1)
        elif line.strip():
            out.append("> " * min(depth, 20) + line.strip())
        elif not depth:
            out.append("")
    return "\n".join(out)


_URL = re.compile(r"""(?i)\b(?:https?://|www\.)[^\s<>"'()\[\]{}]+""")


def _urls(text: str, hrefs: list[str]) -> tuple[Url, ...]:
    seen: dict[str, Url] = {}
    head = text[:MAX_TEXT_CHARS]
    candidates = [m.group().rstrip(".,;:!?") for m in _URL.finditer(head)] if may_hold_link(head) else []
    for raw in hrefs + candidates:
        if len(seen) >= MAX_URLS:
            break
        if raw in seen:
            continue
        host = _host_of(raw)
        if host:
            seen[raw] = Url(raw[:500], host, domains.registrable(host))
    return tuple(seen.values())


_HOST = re.compile(r"(?i)^(?:[a-z][a-z0-9+.-]*:)?//(?:[^@/?#]*@)?([^/:?#]+)")


def _host_of(url: str) -> str | None:
    url = url.strip()
    if url.lower().startswith("www."):
        url = "//" + url
    m = _HOST.match(url)
    if not m:
        return None
    host = m.group(1).strip(".").lower()
    if not host or "." not in host or len(host) > 253:
        return None
    return host


#: one RFC 8601 "resinfo" token: name=value with a quoted or plain value, or a bare word
_AR_TOKEN = re.compile(r'[^\s"=]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)|"(?:[^"\\]|\\.)*"|[^\s"]+')
_AR_EQUALS = re.compile(r"[ \t]*=[ \t]*")
MAX_AUTH_HEADERS = 20


def _ar_structure(value: str) -> tuple[str, list[str]]:
    """Comments removed, the value split at the semicolons outside quoted strings (linear)."""
    parts, cur, depth, quoted, escaped = [], [], 0, False, False
    for ch in value:
        if escaped:
            escaped = False
            if not depth:
                cur.append(ch)
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
            if not depth:
                cur.append(ch)
            continue
        if quoted:
            quoted = ch != '"'
            cur.append(ch)
        elif ch == "(":
            depth += 1
        elif depth:
            if ch == ")":
                depth -= 1
        elif ch == '"':
            quoted = True
            cur.append(ch)
        elif ch == ";":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts[0], parts[1:]


def _parse_auth_header(value: str) -> AuthHeader | None:
    head, resinfos = _ar_structure(value)
    words = head.split()
    if not words:
        return None
    methods = []
    for info in resinfos[:50]:
        tokens = _AR_TOKEN.findall(_AR_EQUALS.sub("=", info.strip()))
        if not tokens or "=" not in tokens[0]:
            continue  # "none", or not a result
        method, _, result = tokens[0].partition("=")
        props = []
        for t in tokens[1:]:
            k, eq, v = t.partition("=")
            if eq and k:
                props.append((k.lower(), v.strip('"').strip()))
        methods.append(AuthMethod(method.split("/", 1)[0].lower(), result.strip('"').lower(), tuple(props)))
    return AuthHeader(words[0].lower().rstrip("."), tuple(methods))


def _auth_results(headers: tuple[tuple[str, str], ...]) -> AuthResults:
    parsed = []
    for name, value in headers:
        if name.lower() != "authentication-results":
            continue
        h = _parse_auth_header(value)
        if h is not None:
            parsed.append(h)
        if len(parsed) >= MAX_AUTH_HEADERS:
            break
    if not parsed:
        return AuthResults()
    first: dict[str, str] = {}
    for m in parsed[0].methods:
        first.setdefault(m.method, m.result)
    return AuthResults(first.get("spf"), first.get("dkim"), first.get("dmarc"), parsed[0].authserv_id, tuple(parsed))
