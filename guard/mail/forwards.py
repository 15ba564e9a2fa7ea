"""Finding messages embedded in a body: inline forwards, pasted header blocks and quoted threads.

Mail clients embed a message in the body in a few shapes, which differ by client and language:

* Gmail:        ``---------- Forwarded message ---------`` then From/Date/Subject/To
* Thunderbird:  ``-------- Forwarded Message --------`` then Subject/Date/From/To
* Outlook:      ``-----Original Message-----``, a line of underscores or nothing at all, then
                From/Sent/To/Subject with localised labels (``De:/Enviado el:/Para:/Asunto:``,
                ``Von:/Gesendet:/An:/Betreff:``, ``De :/Envoyé :/À :/Objet :``, ...)
* Apple Mail:   ``Begin forwarded message:`` then From/Subject/Date/To
* mobile:       ``-------- Original message --------`` (Android), markers without dashes
* pasted:       a header block typed or copied by hand, two lines (From, Subject) are enough
* set off:      a paste quoted with "| ", indented (with or without its headers) or between
                quotation marks below a line ending with a colon, ending where the author writes
                on below it
* quoted:       a reply thread, ``On ... wrote:`` and ">"-quoted lines (HTML ``<blockquote>``
                arrives here as ">" lines too, see :func:`guard.mail.message.html_to_text`)

:func:`split_inline` finds the first embedded message and returns the author's own text above it
plus the embedded message rebuilt as "headers, blank line, body", ready for
:func:`guard.mail.message.parse`.

Every byte is hostile, so nothing here backtracks: lines are cut to :data:`MAX_LINE` characters,
labels and markers are looked up in tables after plain string operations, at most
:data:`MAX_SCAN_LINES` lines are read, and the one regex left is linear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formataddr

from guard.mail.textutil import fold
from guard.pickling import fast_pickle

#: only the start of a line can be a marker, a header label or an attribution
MAX_LINE = 300
MAX_SCAN_LINES = 4000
MAX_HEADERS = 12

_MARKERS = {
    # phrase (without dashes, underscores, colons; folded below) -> style
    "forwarded message": "gmail", "forwarded email": "gmail", "forwarded mail": "gmail",
    "original message": "outlook", "original e-mail": "outlook", "original email": "outlook",
    "begin forwarded message": "apple",
    "mensaje reenviado": "gmail", "mensaje original": "outlook", "inicio del mensaje reenviado": "apple",
    "correo reenviado": "gmail",
    "missatge reenviat": "gmail", "missatge original": "outlook", "inici del missatge reenviat": "apple",
    "message transfere": "gmail", "message d'origine": "outlook", "message original": "outlook",
    "debut du message reexpedie": "apple", "debut du message transfere": "apple",
    "weitergeleitete nachricht": "gmail", "ursprungliche nachricht": "outlook", "original-nachricht": "outlook",
    "anfang der weitergeleiteten nachricht": "apple",
    "messaggio inoltrato": "gmail", "messaggio originale": "outlook", "inizio messaggio inoltrato": "apple",
    "mensagem encaminhada": "gmail", "mensagem original": "outlook", "mensagem reencaminhada": "gmail",
    "inicio da mensagem reencaminhada": "apple", "inicio da mensagem encaminhada": "apple",
    "doorgestuurd bericht": "gmail", "oorspronkelijk bericht": "outlook", "begin doorgestuurd bericht": "apple",
    "wiadomosc przekazana": "gmail", "przekazana wiadomosc": "gmail", "oryginalna wiadomosc": "outlook",
    "iletilen ileti": "gmail", "iletilmis ileti": "gmail", "orijinal mesaj": "outlook", "ozgun ileti": "outlook",
    "転送されたメッセージ": "gmail", "转发的邮件": "gmail", "转发邮件": "gmail", "原始邮件": "outlook",
    "原始郵件": "outlook", "轉寄郵件": "gmail", "转发邮件信息": "gmail", "轉寄郵件資訊": "gmail",
    "原始邮件信息": "outlook", "已转发邮件": "gmail", "転送メッセージ": "gmail", "元のメッセージ": "outlook",
    "пересылаемое сообщение": "gmail", "исходное сообщение": "outlook",
    "wiadomość oryginalna": "outlook", "początek przekazywanej wiadomości": "apple",
    "wiadomość przekazana dalej": "gmail", "przekazana dalej wiadomość": "gmail",
    "iletilen mesaj": "gmail", "yönlendirilmiş ileti": "gmail", "yönlendirilen ileti": "gmail",
    "orijinal ileti": "outlook", "iletilmiş ileti başlangıcı": "apple", "iletilen iletinin başlangıcı": "apple",
    "έναρξη προωθημένου μηνύματος": "apple", "προωθημένο μήνυμα": "gmail", "αρχικό μήνυμα": "outlook",
    "以下是转发的邮件": "apple", "转发的消息": "gmail", "转发的信息": "gmail", "转发消息": "gmail",
    "原始信息": "outlook", "原始消息": "outlook", "原始郵件信息": "outlook",
    "begin van doorgestuurd bericht": "apple", "origineel bericht": "outlook",
    # Nordic
    "vidarebefordrat meddelande": "gmail", "ursprungligt meddelande": "outlook", "originalmeddelande": "outlook",
    "vidarebefordrat brev": "apple", "början på vidarebefordrat brev": "apple",
    "videresendt meddelelse": "gmail", "oprindelig meddelelse": "outlook", "videresendt besked": "gmail",
    "start på videresendt besked": "apple", "videresendt melding": "gmail", "opprinnelig melding": "outlook",
    "begynnelse på videresendt melding": "apple", "välitetty viesti": "gmail", "alkuperäinen viesti": "outlook",
    "välitetty viesti alkaa": "apple", "áframsent skeyti": "gmail", "upprunalegt skeyti": "outlook",
    # Central and Eastern Europe
    "mesaj redirecționat": "gmail", "mesaj transmis": "gmail",
    "mesaj original": "outlook", "începutul mesajului redirecționat": "apple",
    "přeposlaná zpráva": "gmail", "původní zpráva": "outlook", "začátek přeposlané zprávy": "apple",
    "preposlaná správa": "gmail", "pôvodná správa": "outlook", "začiatok preposlanej správy": "apple",
    "továbbított üzenet": "gmail", "eredeti üzenet": "outlook", "továbbított levél kezdete": "apple",
    "proslijeđena poruka": "gmail", "izvorna poruka": "outlook", "originalna poruka": "outlook",
    "posredovano sporočilo": "gmail", "izvirno sporočilo": "outlook",
    # Cyrillic
    "пересланное сообщение": "gmail", "переадресованное сообщение": "gmail", "оригинальное сообщение": "outlook",
    "начало переадресованного сообщения": "apple", "переслане повідомлення": "gmail",
    "оригінальне повідомлення": "outlook", "вихідне повідомлення": "outlook", "початок пересланого повідомлення": "apple",
    "препратено съобщение": "gmail", "оригинално съобщение": "outlook", "начало на препратеното съобщение": "apple",
    "прослеђена порука": "gmail", "оригинална порука": "outlook",
    # right to left
    "رسالة معاد توجيهها": "gmail", "الرسالة المعاد توجيهها": "gmail", "رسالة محولة": "gmail",
    "الرسالة الأصلية": "outlook", "بداية الرسالة المعاد توجيهها": "apple",
    "הודעה שהועברה": "gmail", "הודעה מקורית": "outlook", "תחילת הודעה שהועברה": "apple",
    "پیام بازارسال شده": "gmail", "پیام بازارسال\u200cشده": "gmail", "پیام اصلی": "outlook",
    "شروع پیام بازارسال شده": "apple", "اصل پیغام": "outlook",
    # East and South-East Asia
    "전달된 메일": "gmail", "전달된 메시지": "gmail", "원본 메시지": "outlook", "원본 메일": "outlook",
    "元のメール": "outlook", "thư được chuyển tiếp": "gmail", "thư đã chuyển tiếp": "gmail", "thư gốc": "outlook",
    "bắt đầu thư được chuyển tiếp": "apple", "pesan yang diteruskan": "gmail", "pesan terusan": "gmail",
    "pesan asli": "outlook", "awal pesan yang diteruskan": "apple", "ข้อความที่ส่งต่อ": "gmail",
    "ข้อความต้นฉบับ": "outlook", "अग्रेषित संदेश": "gmail", "मूल संदेश": "outlook",
}
# written as the clients write them, looked up folded (fold: case, accents, final sigma)
_MARKERS = {fold(k): v for k, v in _MARKERS.items()}
_MARKER_STRIP = "-_=*<>[]() \t:："

_LABELS = {
    "from": "from|de|von|da|van|från|fra|od|remitente|expéditeur|expediteur|gönderen|kimden|absender|"
            "afzender|nadawca|mittente|发件人|寄件者|寄件人|差出人|από|от|"
            "lähettäjä|frá|de la|feladó|šalje|pošiljatelj|від|من|מאת|از|보낸 사람|보낸사람|từ|dari|จาก|प्रेषक",
    "to": "to|para|per|per a|à|a|pour|an|aan|til|till|destinatario|destinataire|destinatari|do|kime|alıcı|empfänger|"
          "adresat|收件人|收件者|宛先|προς|кому|"
          "vastaanottaja|către|catre|komu|címzett|prima|до|إلى|الى|אל|به|받는 사람|받는사람|đến|kepada|ถึง|प्रति",
    "cc": "cc|kopie|còpia|copia|dw|bilgi|抄送|副本|κοιν|kopia|másolat|копия|копія|نسخة|עותק|رونوشت|참조|tembusan",
    "date": "date|sent|data|fecha|enviado|enviado el|envoyé|envoyé le|envoye|envoye le|gesendet|datum|inviato|"
            "enviat|enviada|enviada em|enviado em|enviat el|verzonden|skickat|sendt|wysłano|wysłane|tarih|"
            "gönderildi|gönderilme tarihi|发送时间|发送日期|日期|時間|时间|寄件日期|送信日時|ημερομηνία|στάλθηκε|отправлено|дата|"
            "sent at|date sent|"
            "dato|lähetetty|päivämäärä|trimis|dată|odesláno|odoslané|dátum|elküldve|poslano|надіслано|изпратено|"
            "التاريخ|تم الإرسال|تاريخ الإرسال|תאריך|נשלח|تاریخ|ارسال شده|날짜|보낸 날짜|日付|ngày|đã gửi|tanggal|dikirim|"
            "วันที่|दिनांक",
    "subject": "subject|asunto|assumpte|objet|sujet|betreff|oggetto|assunto|onderwerp|ämne|emne|tema|temat|konu|"
               "主题|主旨|件名|θέμα|тема|"
               "aihe|subiect|předmět|predmet|tárgy|относно|الموضوع|موضوع|נושא|제목|chủ đề|tiêu đề|subjek|perihal|เรื่อง|विषय",
    "reply-to": "reply-to|responder a|répondre à|antwort an",
}
_LABEL_TO_KEY = {alt: key for key, alts in _LABELS.items() for alt in alts.split("|")}
_MAX_LABEL = max(map(len, _LABEL_TO_KEY)) + 4

#: looked for as substrings of the lowered line, so a word's longer forms ("napisała", "написал",
#: "пишет") need no entry of their own
_ATTRIBUTION_WORDS = (
    "wrote", "writes", "escribió", "escribio", "va escriure", "ha escrit", "a écrit", "a ecrit", "schrieb",
    "ha scritto", "escreveu", "schreef", "napisał", "napisal", "yazdı", "写道", "寫道", "έγραψε",
    "пише", "написа", "skrev", "kirjoitti", "napsal", "napísal", "a scris", "írta",
    "je napisao", "كتب", "כתב", "نوشت", "작성", "のメール", "書きました", "đã viết", "menulis",
    "เขียน", "ने लिखा",
)
_MAILTO = re.compile(r"\[mailto:([^\]\s]{1,254})\]|<mailto:([^>\s]{1,254})>", re.I)
_ADDRESS = re.compile(r"[\w.+'-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")


@fast_pickle
@dataclass(frozen=True, slots=True)
class InlineForward:
    own_text: str
    embedded: str  # "Header: value" lines, a blank line, then the body
    style: str  # gmail, thunderbird, outlook, apple, mobile, bare, pasted, quoted


def _unquote(line: str) -> tuple[str, int]:
    """The line without its quote prefix, and the quote depth (bounded work).

    The prefix is ">" (RFC 3676 and every client's reply) or "|" followed by a space (a paste
    quoted by hand, some clients' quoting); a line that starts and ends with "|" is a table row,
    not a quote."""
    s = line[:MAX_LINE]
    depth = 0
    i = 0
    n = len(s)
    pipes = "|" in s and not (s.rstrip().endswith("|") and s.count("|") >= 2)
    while i < n and depth < 20:
        c = s[i]
        if c == ">" or (c == "|" and pipes and (i + 1 == n or s[i + 1] in " \t")):
            depth += 1
            i += 1
        elif c in " \t" and depth:
            i += 1
        elif c in " \t" and i < 8:
            i += 1
        else:
            break
    if depth == 0:
        return s, 0
    return s[i:], depth


def _marker_style(stripped: str) -> str | None:
    if not stripped or len(stripped) > 80:
        return None
    core = stripped.strip(_MARKER_STRIP)
    if not core:
        if stripped.count("_") >= 10 and set(stripped) <= {"_", " ", "\t"}:
            return "outlook-line"
        return None
    key = fold(core)
    style = _MARKERS.get(key)
    if style is None:
        return None
    if style == "gmail" and stripped.startswith("--------") and not stripped.startswith("----------"):
        return "thunderbird"
    if style == "outlook" and stripped.startswith("--------") and "original message" in key:
        return "mobile"
    return style


def _header(line: str) -> tuple[str, str] | None:
    """("from", value) for a "Label: value" line in any supported language, else None."""
    s = line.strip().replace("：", ":")
    colon = s.find(":", 0, _MAX_LABEL)
    if colon <= 0:
        return None
    label = s[:colon].strip(" *\t").lower()
    key = _LABEL_TO_KEY.get(label)
    if key is None:
        return None
    return key, s[colon + 1 :].strip(" *\t")


def _header_block(lines: list[str], start: int) -> tuple[list[tuple[str, str]], int] | None:
    """Parse "Label: value" lines from ``start`` (after at most three blank lines)."""
    i = start
    n = len(lines)
    while i < n and i < start + 3 and not _unquote(lines[i])[0].strip():
        i += 1
    headers: list[tuple[str, str]] = []
    while i < n and len(headers) < MAX_HEADERS:
        line = _unquote(lines[i])[0]
        h = _header(line)
        if h:
            headers.append(h)
            i += 1
            continue
        if headers and line.strip() and line[:1] in " \t" and headers[-1][0] in ("to", "cc"):
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
            i += 1
            continue
        if headers and not line.strip() and i + 1 < n and _header(_unquote(lines[i + 1])[0]):
            i += 1  # one blank line between two header lines (an HTML block per line, as webmail writes them)
            continue
        break
    keys = {k for k, _ in headers}
    if len(headers) < 2 or not (keys & {"from", "subject"}):
        return None
    return headers, i


def _attribution(line: str) -> bool:
    s = line.strip()
    if not s.endswith((":", "：")) or len(s) > MAX_LINE:
        return False
    low = s.lower()
    return any(w in low for w in _ATTRIBUTION_WORDS)


def split_inline(text: str) -> InlineForward | None:
    """Find the first embedded message in ``text`` (see the module docstring)."""
    lines = text.split("\n", MAX_SCAN_LINES)[:MAX_SCAN_LINES]
    limit = len(lines)
    prev = None  # the last non-blank line before i
    for i in range(limit):
        line, depth = _unquote(lines[i])
        stripped = line.strip()
        if not stripped:
            continue
        before, prev = prev, i
        style = _marker_style(stripped)
        if style is not None:
            block = _header_block(lines, i + 1)
            if block is not None:
                return _build(lines, i, block[0], block[1], "outlook" if style == "outlook-line" else style)
            if style != "outlook-line":
                # a marker with no header block: the rest is still the forwarded text
                return InlineForward(_own(lines, i), "\n" + "\n".join(_unquote(x)[0] for x in lines[i + 1 :]), style)
            continue
        h = _header(stripped)
        if h and h[0] == "from" and h[1]:
            block = _header_block(lines, i)
            if block is not None:
                keys = {k for k, _ in block[0]}
                if "subject" in keys:
                    kind = "bare" if len(block[0]) >= 3 else "pasted"
                    return _build(lines, i - 1, block[0], block[1], kind)
        if depth == 0 and _attribution(stripped):
            quoted = _quoted_run(lines, i + 1)
            if quoted is not None:
                return _quoted(lines, i, stripped, quoted)
        if depth > 0:
            # a quoted block with no attribution line above it
            quoted = _quoted_run(lines, i)
            if quoted is not None and quoted[1] - quoted[0] >= 2:
                return _quoted(lines, i, "", quoted, own_end=i)
        elif (before is not None and stripped[0] in _OPENING_QUOTES
              and lines[before].rstrip().endswith((":", "："))):
            # a passage copied between quotation marks below "they wrote:" / "texte reçu :"
            end = _quotation_end(lines, i, _OPENING_QUOTES[stripped[0]])
            if end is not None:
                body = "\n".join(x.strip() for x in lines[i:end]).strip()[1:-1]
                return InlineForward(_own_around(lines, i, end), "\n\n" + body.strip() + "\n", "pasted")
        elif before is not None and _indent(lines[i]) >= _PASTE_INDENT > _indent(lines[before]):
            # a paste set off by indentation below the author's own line
            end = _indented_run(lines, i)
            if end is not None:
                body = "\n".join(x.strip() for x in lines[i:end])
                return InlineForward(_own_around(lines, i, end), "\n\n" + body.strip() + "\n", "pasted")
    return None


#: opening quotation marks and the closing marks that end a passage they open
_OPENING_QUOTES = {'"': '"', "“": "”", "„": "“”", "«": "»", "»": "«", "‘": "’", "‚": "‘’", "「": "」", "『": "』",
                   "‹": "›", "'": "'"}
#: a quoted passage is a message when it has at least this many characters, within this many lines
_QUOTATION_CHARS = 120
_QUOTATION_LINES = 80


def _quotation_end(lines: list[str], start: int, closing: str) -> int | None:
    """The line after the one that closes the quotation opened at ``start`` (a line ending with a
    closing mark), or None when none does within :data:`_QUOTATION_LINES` lines or the passage is
    too short to be a message."""
    chars = 0
    for j in range(start, min(len(lines), start + _QUOTATION_LINES)):
        text = lines[j].strip()
        chars += len(text)
        if text.endswith(tuple(closing)) and (j > start or len(text) > 1):
            return j + 1 if chars >= _QUOTATION_CHARS else None
    return None


#: an indented paste: lines indented by at least this much, at least this many of them and characters
_PASTE_INDENT = 4
_PASTE_LINES = 3
_PASTE_CHARS = 120


def _indent(line: str) -> int:
    """The line's indentation in columns (a tab counts as four), up to MAX_LINE."""
    n = 0
    for c in line[:MAX_LINE]:
        if c == " ":
            n += 1
        elif c == "\t":
            n += 4
        else:
            return n
    return 0  # a blank line has no indentation


def _indented_run(lines: list[str], start: int) -> int | None:
    """The end of the indented paste starting at ``start`` (blank lines allowed inside), or None
    when it is too short to be a message."""
    i, n, count, chars, last = start, len(lines), 0, 0, start
    while i < n:
        line = lines[i]
        if line.strip():
            if _indent(line) < _PASTE_INDENT:
                break
            count += 1
            chars += len(line.strip())
            last = i
        i += 1
    if count < _PASTE_LINES or chars < _PASTE_CHARS:
        return None
    return last + 1


def _quoted_run(lines: list[str], start: int) -> tuple[int, int] | None:
    """(first, end) of the ">"-quoted lines starting at ``start`` (blank lines allowed inside)."""
    i = start
    n = len(lines)
    while i < n and i < start + 2 and not lines[i].strip():
        i += 1
    first = i
    last = None
    while i < n:
        _, depth = _unquote(lines[i])
        if depth:
            last = i
        elif lines[i].strip():
            break
        i += 1
    if last is None:
        return None
    return first, last + 1


def _quoted(lines, at: int, attribution: str, run: tuple[int, int], own_end: int | None = None) -> InlineForward:
    body = "\n".join(_unquote(x)[0] for x in lines[run[0] : run[1]])
    inner = split_inline(body)
    head = ""
    m = _ADDRESS.search(attribution)
    if m:
        before = attribution.split(m.group(), 1)[0].rstrip(" <([\t")
        if before.endswith('"'):  # "Hernández, Núria" <a@b>
            name = before[:-1].rsplit('"', 1)[-1]
        else:  # the date before the name ends at its last comma: "On Mon, 5 Jan 2026 at 10:02, Name <a@b>"
            name = before.rsplit(",", 1)[-1] if "," in before else ""
        name = name.strip(" <>\"'()[]\t")
        # quoted as a header needs it: "Núria Hernández (<n@crm.cat>)" must not become a comment
        head = "From: " + formataddr((name, m.group().lower()))
    own_lines = lines[: own_end if own_end is not None else at] + lines[run[1] :]
    own = "\n".join(x for x in own_lines if not _unquote(x)[1]).strip()
    if inner is not None and not head:
        return InlineForward(own, inner.embedded if not inner.own_text else body, inner.style)
    return InlineForward(own, (head + "\n" if head else "\n") + "\n" + body.strip() + "\n", "quoted")


def _own(lines: list[str], end: int) -> str:
    return "\n".join(x for x in lines[: max(end, 0)] if not _unquote(x)[1]).strip()


def _own_around(lines: list[str], start: int, end: int) -> str:
    """The author's words above a pasted passage (lines before ``start``) and below it (from
    ``end``), quoted lines left out."""
    return (_own(lines, start) + "\n\n" + "\n".join(x for x in lines[end:] if not _unquote(x)[1])).strip()


def _clean_value(key: str, value: str) -> str:
    value = value.replace("*", "").strip()
    if key in ("from", "to", "cc", "reply-to"):
        value = _MAILTO.sub(lambda m: "<" + (m.group(1) or m.group(2)) + ">", value)
        # "Name <a@b<mailto:a@b>>" or "Name [a@b]" or a bare address all become parseable
        value = value.replace("<<", "<").replace(">>", ">")
        value = value.replace("[", "<").replace("]", ">") if "@" in value else value
    return value.replace("\r", " ").replace("\n", " ")


_HEADER_NAMES = {"from": "From", "to": "To", "cc": "Cc", "date": "Date", "subject": "Subject", "reply-to": "Reply-To"}


def _build(lines: list[str], marker: int, headers, body_start: int, style: str) -> InlineForward:
    head = "\n".join(f"{_HEADER_NAMES[k]}: {_clean_value(k, v)}" for k, v in headers)
    end = _set_off_end(lines, marker + 1, body_start)
    body = "\n".join(_unquote(x)[0] for x in lines[body_start:end]).strip()
    own = _own(lines, marker)
    after = "\n".join(x for x in lines[end:] if not _unquote(x)[1]).strip()
    return InlineForward(own + "\n\n" + after if own and after else own or after, head + "\n\n" + body + "\n", style)


def _set_off_end(lines: list[str], first: int, body_start: int) -> int:
    """Where an embedded message set off from the author's text ends.

    A message pasted indented or quoted ("> ", "| ") ends at the first line that is neither (the
    author writing on below it: "I have cancelled the card"); what follows is the author's again.
    A forward that is not set off runs to the end of the text, as mail clients write it."""
    n = len(lines)
    while first < n and not lines[first].strip():
        first += 1
    if first >= n:
        return n
    ref = lines[first]
    quoted = _unquote(ref)[1] > 0
    indented = not quoted and len(ref) - len(ref.lstrip(" \t")) >= 2
    if not (quoted or indented):
        return n
    j = body_start
    while j < n and not lines[j].strip():
        j += 1
    if j < n and not (_unquote(lines[j])[1] if quoted else lines[j][:1] in " \t"):
        return n  # only the headers were set off: the body is not, and runs on
    for j in range(body_start, n):
        line = lines[j]
        if not line.strip():
            continue
        if (quoted and not _unquote(line)[1]) or (indented and line[:1] not in " \t"):
            return j
    return n


def strip_quoted(text: str) -> str:
    """The author's own words: drop ">"-quoted lines and the "On ... wrote:" line above them."""
    if ">" not in text and ":" not in text:
        return text
    out = []
    for line in text.split("\n"):
        if _unquote(line)[1]:
            continue
        if _attribution(line):
            continue
        out.append(line)
    return "\n".join(out)
