"""Finding messages forwarded inline in a body.

Mail clients forward "inline" by pasting a marker line and a small header
block above the original text. The shapes differ by client and language:

* Gmail:        ``---------- Forwarded message ---------`` then From/Date/Subject/To
* Thunderbird:  ``-------- Forwarded Message --------`` then Subject/Date/From/To
* Outlook:      ``-----Original Message-----`` or a line of underscores, then
                From/Sent/To/Subject (``De:/Enviado:/Para:/Asunto:`` in Spanish,
                ``De :/Envoyé :/À :/Objet :`` in French, ...)
* Apple Mail:   ``Begin forwarded message:`` then From/Subject/Date/To

:func:`split_inline` finds the first such block and returns the author's own
text above it plus the embedded message rebuilt as "headers, blank line,
body", ready for :func:`guard.mail.message.parse`. A header block with no marker
(participants who copy the headers by hand) is accepted when it starts with a
From-like line and has a Subject- or Date-like line right after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MARKER_WORDS = (
    "forwarded message|original message|mensaje reenviado|mensaje original|missatge reenviat|"
    "missatge original|message transf[ée]r[ée]|message d'origine|message original|"
    "weitergeleitete nachricht|urspr[üu]ngliche nachricht|original-nachricht|messaggio inoltrato|"
    "messaggio originale|mensagem encaminhada|mensagem original|mensagem reencaminhada|doorgestuurd bericht|"
    "oorspronkelijk bericht"
)
_DASHED = re.compile(rf"^\s*-{{2,}}\s*(?:{_MARKER_WORDS})\s*-{{2,}}\s*$", re.I)
_APPLE = re.compile(
    r"^\s*(?:begin forwarded message|inicio del mensaje reenviado|inici del missatge reenviat|"
    r"d[ée]but du message (?:r[ée]exp[ée]di[ée]|transf[ée]r[ée])|anfang der weitergeleiteten nachricht|"
    r"inizio messaggio inoltrato|in[íi]cio da mensagem (?:reencaminhada|encaminhada))\s*:?\s*$",
    re.I,
)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")

_LABELS = {
    "from": "from|de|von|da|van|från|fra|od|remitente|expéditeur|expediteur",
    "to": "to|para|per|à|a|an|aan|til|till|destinatario|destinataire|destinatari",
    "cc": "cc|kopie|còpia|copia",
    "date": "date|sent|data|fecha|enviado|envoyé|envoye|gesendet|datum|inviato|enviat|enviada|verzonden|skickat|sendt",
    "subject": "subject|asunto|assumpte|objet|betreff|oggetto|assunto|onderwerp|ämne|emne|tema",
    "reply-to": "reply-to|responder a|répondre à|antwort an",
}
_LABEL_TO_KEY = {}
for _key, _alts in _LABELS.items():
    for _alt in _alts.split("|"):
        _LABEL_TO_KEY[_alt] = _key
_HEADER_LINE = re.compile(
    r"^\s*\**\s*(" + "|".join(sorted(map(re.escape, _LABEL_TO_KEY), key=len, reverse=True)) + r")\s*\**\s*:\s*\**\s*(.*?)\s*$",
    re.I,
)
_QUOTE_PREFIX = re.compile(r"^(?:\s*>)+ ?")
_MAILTO = re.compile(r"\[mailto:([^\]\s]+)\]|<mailto:([^>\s]+)>", re.I)

MAX_SCAN_LINES = 4000


@dataclass(frozen=True, slots=True)
class InlineForward:
    own_text: str
    embedded: str  # "Header: value" lines, a blank line, then the body
    style: str  # gmail, thunderbird, outlook, apple, bare


def split_inline(text: str) -> InlineForward | None:
    """Find the first inline-forwarded message in ``text`` (see module docstring)."""
    lines = text.split("\n")
    limit = min(len(lines), MAX_SCAN_LINES)
    for i in range(limit):
        raw_line = lines[i]
        line = _QUOTE_PREFIX.sub("", raw_line) if raw_line.lstrip().startswith(">") else raw_line
        style = None
        if _DASHED.match(line):
            low = line.lower()
            style = "gmail" if "forwarded message" in low and line.strip().startswith("----------") else (
                "outlook" if "original message" in low and line.strip().startswith("-----O") else "thunderbird")
        elif _APPLE.match(line):
            style = "apple"
        elif _UNDERSCORES.match(line):
            style = "outlook"
        if style is not None:
            block = _header_block(lines, i + 1)
            if block is not None:
                headers, body_start = block
                return _build(lines, i, headers, body_start, style, quoted=raw_line.lstrip().startswith(">"))
            if style != "outlook":
                # a marker with no header block: the rest is still the forwarded text
                return InlineForward("\n".join(lines[:i]).strip(), "\n" + "\n".join(lines[i + 1 :]), style)
            continue
        m = _HEADER_LINE.match(line)
        if m and _LABEL_TO_KEY.get(m.group(1).lower()) == "from" and "@" in m.group(2):
            block = _header_block(lines, i)
            if block is not None and len(block[0]) >= 3:
                keys = {k for k, _ in block[0]}
                if "subject" in keys and ("date" in keys or "to" in keys):
                    return _build(lines, i - 1, block[0], block[1], "bare", quoted=raw_line.lstrip().startswith(">"))
    return None


def _header_block(lines: list[str], start: int) -> tuple[list[tuple[str, str]], int] | None:
    """Parse "Label: value" lines from ``start``; return (headers, first body line)."""
    i = start
    while i < len(lines) and i < start + 3 and not _unquote(lines[i]).strip():
        i += 1
    headers: list[tuple[str, str]] = []
    while i < len(lines) and len(headers) < 12:
        line = _unquote(lines[i])
        m = _HEADER_LINE.match(line)
        if m:
            headers.append((_LABEL_TO_KEY[m.group(1).lower()], m.group(2)))
            i += 1
            continue
        if headers and line.strip() and line[:1] in " \t" and headers[-1][0] in ("to", "cc"):
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
            i += 1
            continue
        break
    keys = {k for k, _ in headers}
    if len(headers) < 2 or not (keys & {"from", "subject"}):
        return None
    return headers, i


def _unquote(line: str) -> str:
    return _QUOTE_PREFIX.sub("", line) if line.lstrip().startswith(">") else line


def _clean_value(key: str, value: str) -> str:
    value = value.replace("*", "").strip()
    if key in ("from", "to", "cc", "reply-to"):
        value = _MAILTO.sub(lambda m: "<" + (m.group(1) or m.group(2)) + ">", value)
        value = re.sub(r"<([^<>\s]+)<([^<>\s]+)>>", r"<\1>", value)
        # "Name <a@b>" or "Name [a@b]" or bare address all become parseable
        value = re.sub(r"\[([^\[\]\s]+@[^\[\]\s]+)\]", r"<\1>", value)
    return re.sub(r"[\r\n]+", " ", value)


_HEADER_NAMES = {"from": "From", "to": "To", "cc": "Cc", "date": "Date", "subject": "Subject", "reply-to": "Reply-To"}


def _build(lines: list[str], marker: int, headers, body_start: int, style: str, quoted: bool) -> InlineForward:
    own = "\n".join(lines[: max(marker, 0)]).strip()
    head = "\n".join(f"{_HEADER_NAMES[k]}: {_clean_value(k, v)}" for k, v in headers)
    body_lines = lines[body_start:]
    if quoted:
        body_lines = [_unquote(x) for x in body_lines]
    return InlineForward(own, head + "\n\n" + "\n".join(body_lines).strip() + "\n", style)


_ATTRIBUTION = re.compile(
    r"(?:wrote|escribió|escribio|va escriure|a écrit|a ecrit|schrieb|ha scritto|escreveu|schreef)\s*:\s*$", re.I
)


def strip_quoted(text: str) -> str:
    """The author's own words: drop ">"-quoted lines and the "On ... wrote:" line above them."""
    if ">" not in text and "wrote" not in text:
        return text
    out = []
    for line in text.split("\n"):
        s = line.lstrip()
        if s.startswith(">"):
            continue
        if _ATTRIBUTION.search(s) and len(s) < 300:
            continue
        out.append(line)
    return "\n".join(out)
