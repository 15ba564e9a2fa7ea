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
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from selectolax.lexbor import LexborHTMLParser

from guard.mail import domains

from guard.mail import forwards

from guard.mail import language
from guard.mail.textutil import decode_bytes

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


@dataclass(frozen=True, slots=True)
class Url:
    url: str
    host: str
    registrable: str


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class AuthResults:
    """SPF, DKIM and DMARC results from the first Authentication-Results header.

    The first header is the one the receiving server added; lower ones may be
    forged by the sender. Each value is the lower-cased result ("pass",
    "fail", "softfail", "none", ...) or None when not present.
    """

    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None
    authserv_id: str | None = None


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
    language: str
    forwarded: tuple["ParsedMessage", ...]
    forward_style: str | None  # how the first embedded message was found
    defects: tuple[str, ...]
    size: int
    _lower: dict = field(default_factory=dict, repr=False, compare=False)

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
        auth=AuthResults(), language="und", forwarded=(), forward_style=None, defects=(defect,), size=len(raw),
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

    headers = tuple((str(k), _decode_header(v, defects)) for k, v in msg.raw_items())
    get = {}
    for k, v in headers:
        get.setdefault(k.lower(), v)

    from_ = _first_address(get.get("from"), defects, "From")
    if "from" not in get:
        defects.append("missing From header")
    sender = _first_address(get.get("sender"), defects, "Sender")
    reply_to = _addresses(get.get("reply-to"))
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
    lang = language.detect(subject + "\n" + own_text)
    return ParsedMessage(
        headers=headers,
        from_=from_,
        sender=sender,
        reply_to=reply_to,
        return_path=return_path,
        to=_addresses(get.get("to")),
        cc=_addresses(get.get("cc")),
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
        language=lang,
        forwarded=forwarded,
        forward_style=style,
        defects=tuple(dict.fromkeys(defects)),
        size=size,
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
        if any(0xDC80 <= ord(c) <= 0xDCFF for c in value):
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


def _addresses(value: str | None) -> tuple[Address, ...]:
    if not value:
        return ()
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:
        return ()
    out = []
    for name, addr in pairs[:100]:
        addr = addr.strip().strip("<>").lower()
        if addr or name:
            out.append(Address(name.strip(), addr))
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
#: HTML with more tags than this is not given to the HTML parser (whose work grows with nesting):
#: its tags are stripped by a linear scan instead
MAX_HTML_TAGS = 20_000
_QUOTE_OPEN, _QUOTE_CLOSE = "\x02", "\x03"
_TAG = re.compile(r"<[^<>]{0,2000}>")
_CONTROL = str.maketrans("", "", _QUOTE_OPEN + _QUOTE_CLOSE)
_BLANK_LINES = re.compile(r"\n[ \t\u00a0]*(?:\n[ \t\u00a0]*)+")
_SPACES = re.compile(r"[ \t\u00a0]+")


def html_to_text(html: str, hrefs: list[str] | None = None) -> str:
    """Readable text from HTML with the Lexbor parser (selectolax); links go to ``hrefs``.

    ``<blockquote>`` content comes out as ">"-quoted lines, as a plain-text client quotes, so that
    a quoted thread in HTML-only mail is found as an embedded message. HTML with more than
    :data:`MAX_HTML_TAGS` tags is reduced to text by a linear tag strip instead of the parser."""
    html = html[:MAX_HTML_BYTES].translate(_CONTROL)
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
    candidates = [m.group().rstrip(".,;:!?") for m in _URL.finditer(text[:MAX_TEXT_CHARS])]
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


_AUTH_RESULT = re.compile(r"\b(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.I)


def _auth_results(headers: tuple[tuple[str, str], ...]) -> AuthResults:
    for name, value in headers:
        if name.lower() != "authentication-results":
            continue
        found: dict[str, str] = {}
        for method, result in _AUTH_RESULT.findall(value):
            found.setdefault(method.lower(), result.lower())
        authserv = value.split(";", 1)[0].strip().split()[0] if value.strip() else None
        return AuthResults(found.get("spf"), found.get("dkim"), found.get("dmarc"), authserv)
    return AuthResults()
