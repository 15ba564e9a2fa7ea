"""Structured logs: text (``time level logger: message``) or JSON (one object per line).

Every record carries its logger name; the per-message decision log (logger
``guard.decision``) holds identifiers only: UID, UIDVALIDITY, Message-ID, category, score,
rule row, what was sent and held back, the folder. Never bodies, subjects, card numbers or
secrets. As a second line of defence a filter masks anything that looks like a payment card
number (13-19 digits passing the Luhn check) or a ``password=``/``token=``/``Bearer`` secret
in every record, whatever logger it comes from. Identifiers stay traceable: digits inside a
Message-ID-like token (``<...@...>``), inside a longer identifier or path, or as the value of an
identifier key (``uid=``, ``size=``, ``...-id=``) are never masked. Protocol loggers that echo
LOGIN or AUTH lines (imapclient, imaplib, aiosmtplib) are kept at WARNING.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

QUIET = ("imapclient", "imaplib", "aiosmtplib", "msal", "urllib3")

# Card numbers: a run of digits, optionally grouped by single spaces or dashes, that stands alone.
# Left alone: Message-ID-like tokens (``<anything@anything>``, bare ``local@domain``) whatever
# characters surround the digits inside them; digits that are part of a longer identifier (bounded
# by letters, ``_``, ``.``, ``@``, ``/``, ``+`` or ``-``: a path, a dotted id, a timestamp suffix); and
# the value of an identifier key (``uid=``, ``message_id:``, ``size=`` ...). Everywhere else a
# Luhn-valid 13-19 digit number is masked, also when more digits follow it (``4111 ... 1111 123``).
_ATEXT = "A-Za-z0-9!#$%'*+/?^_`{|}~.-"  # RFC 5322 atext and dots, without "=" and "&" (key=value&...)
_MSGID = re.compile(rf"<[^<>\s@]+@[^<>\s]+>|(?<![{_ATEXT}])[{_ATEXT}]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_RUN = re.compile(r"[0-9](?:[ -]?[0-9])*")
_GROUP = re.compile(r"[0-9]+")
_KEY = re.compile(r"([A-Za-z][\w.-]*)[ \t]*[=:][ \t]*\Z")
#: keys (or the last ``_ . -`` part of one) whose values are identifiers, never card numbers
ID_KEYS = frozenset({"id", "ids", "uid", "uids", "uidvalidity", "uidnext", "modseq", "highestmodseq", "seq",
                     "msgid", "mid", "size", "bytes", "octets", "ts", "timestamp", "epoch", "pid", "nonce",
                     "serial", "offset"})
_WORDISH_BEFORE = frozenset("_.@/+-")
_WORDISH_AFTER = frozenset("_@/-")
_SECRET = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|access_token|refresh_token|client_secret)"
                     r"(\s*[=:]\s*)([^\s,;&]+)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_XOAUTH = re.compile(r"\buser=[^\x01\s]*\x01auth=[^\x01]*\x01\x01")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_layout(sizes: list[int]) -> bool:
    """Digit-group sizes a written card number has: one block, 4-4-4-4(-1..3), 4-6-5 or 4-6-4."""
    if len(sizes) == 1:
        return True
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _card_spans(run: str) -> list[tuple[int, int]]:
    """Where in a run of (grouped) digits Luhn-valid card numbers are: from the left, the longest
    card-shaped sequence of whole groups starting at each group, not overlapping."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
    spans, a = [], 0
    while a < len(groups):
        best, n = None, 0
        for b in range(a, len(groups)):
            n += groups[b][1] - groups[b][0]
            if n > 19:
                break
            sizes = [e - s for s, e in groups[a:b + 1]]
            if n >= 13 and _card_layout(sizes) and _luhn("".join(run[s:e] for s, e in groups[a:b + 1])):
                best = b
        if best is None:
            a += 1
        else:
            spans.append((groups[a][0], groups[best][1]))
            a = best + 1
    return spans


def _identifier_key(text: str, at: int) -> bool:
    """True when the digits at ``at`` are the value of an identifier key (``uid=``, ``message_id: ``)."""
    m = _KEY.search(text, max(0, at - 80), at)
    if m is None:
        return False
    key = m.group(1).lower()
    return key in ID_KEYS or re.split(r"[._-]", key)[-1] in ID_KEYS


def _mask_cards(text: str) -> str:
    out, pos = [], 0
    for m in _RUN.finditer(text):
        i, j = m.span()
        if j - i < 13:
            continue
        before = text[i - 1] if i else ""
        after = text[j] if j < len(text) else ""
        if before and (before.isalnum() or before in _WORDISH_BEFORE):
            continue  # inside an identifier: "x.4111...", "/spool/4111...", "ref-4111..."
        if after and (after.isalnum() or after in _WORDISH_AFTER):
            continue
        if after == "." and j + 1 < len(text) and (text[j + 1].isalnum() or text[j + 1] in "_@"):
            continue  # "1732712345678901234.ABC": a dotted identifier, not a full stop
        for s, e in _card_spans(m.group(0)):
            if s == 0 and _identifier_key(text, i):
                continue
            out.append(text[pos:i + s])
            out.append("[card number]")
            pos = i + e
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    # Message-ID-like tokens are kept whole; card numbers are masked in the text between them
    parts, pos = [], 0
    for m in _MSGID.finditer(text):
        parts.append(_mask_cards(text[pos:m.start()]))
        parts.append(m.group(0))
        pos = m.end()
    parts.append(_mask_cards(text[pos:]))
    text = "".join(parts)
    text = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}[redacted]", text)
    return _XOAUTH.sub("[xoauth2 redacted]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: let the handler report it
            return True
        # the formatted text replaces the format and its arguments, changed or not: the handler
        # then does not format the message a second time
        record.msg, record.args = redact(msg), None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("account", "uid", "message_id"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO", fmt: str = "text", stream=None) -> logging.Handler:
    """Configure the root logger once (replacing earlier guard handlers); returns the handler."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_guard", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._guard = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
