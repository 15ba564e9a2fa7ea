"""The forward-format fixture suite: every client's way of embedding a message, in every language
guard answers in and in many more that participants write in, is found as an embedded message with its own sender, subject and text, apart
from the author's words above it.

The shapes are the clients' own (labels and markers as Gmail, Outlook, Apple Mail, Thunderbird
and Android write them in each language); the texts are made up.
"""

from __future__ import annotations

import base64

import pytest

from guard.mail.message import parse

SUSPECT = "desk@stays-booking.example"
SUBJECT = "Your hotel for the workshop"
SUSPECT_TEXT = "Please confirm your room by sending the card number today."

# language -> (author's words, Gmail marker, Outlook labels (from, sent, to, subject), Apple marker,
#              Thunderbird marker, attribution line)
LANGS = {
    "en": ("Is this real?", "---------- Forwarded message ---------", ("From", "Sent", "To", "Subject"),
           "Begin forwarded message:", "-------- Forwarded Message --------", "On Mon, 5 Jan 2026 at 10:02, {who} wrote:"),
    "es": ("¿Esto es real?", "---------- Mensaje reenviado ---------", ("De", "Enviado el", "Para", "Asunto"),
           "Inicio del mensaje reenviado:", "-------- Mensaje reenviado --------", "El lun, 5 ene 2026 a las 10:02, {who} escribió:"),
    "ca": ("Això és de debò?", "---------- Missatge reenviat ---------", ("De", "Enviat el", "Per a", "Assumpte"),
           "Inici del missatge reenviat:", "-------- Missatge reenviat --------", "El dl., 5 de gen. 2026, {who} va escriure:"),
    "fr": ("Est-ce authentique ?", "---------- Message transféré ---------", ("De", "Envoyé", "À", "Objet"),
           "Début du message réexpédié :", "-------- Message transféré --------", "Le lun. 5 janv. 2026 à 10:02, {who} a écrit :"),
    "de": ("Ist das echt?", "---------- Weitergeleitete Nachricht ---------", ("Von", "Gesendet", "An", "Betreff"),
           "Anfang der weitergeleiteten Nachricht:", "-------- Weitergeleitete Nachricht --------", "Am Mo., 5. Jan. 2026 um 10:02 schrieb {who}:"),
    "it": ("È vero?", "---------- Messaggio inoltrato ---------", ("Da", "Inviato", "A", "Oggetto"),
           "Inizio messaggio inoltrato:", "-------- Messaggio Inoltrato --------", "Il giorno lun 5 gen 2026 alle 10:02 {who} ha scritto:"),
    "pt": ("Isto é verdadeiro?", "---------- Mensagem encaminhada ---------", ("De", "Enviado", "Para", "Assunto"),
           "Início da mensagem encaminhada:", "-------- Mensagem encaminhada --------", "Em seg., 5 de jan. de 2026 às 10:02, {who} escreveu:"),
    "nl": ("Is dit echt?", "---------- Doorgestuurd bericht ---------", ("Van", "Verzonden", "Aan", "Onderwerp"),
           "Begin doorgestuurd bericht:", "-------- Doorgestuurd bericht --------", "Op ma 5 jan 2026 om 10:02 schreef {who}:"),
    "pl": ("Czy to prawda?", "---------- Przekazana wiadomość ---------", ("Od", "Wysłane", "Do", "Temat"),
           "Początek przekazywanej wiadomości:", "-------- Przekazana wiadomość --------", "W dniu 5.01.2026 o 10:02 {who} napisał(a):"),
    "tr": ("Bu gerçek mi?", "---------- İletilen ileti ---------", ("Kimden", "Gönderildi", "Kime", "Konu"),
           "İletilmiş ileti başlangıcı:", "-------- İletilen Mesaj --------", "5 Oca 2026 Pzt 10:02 tarihinde {who} şunu yazdı:"),
    "zh": ("这是真的吗？", "---------- 已转发邮件 ----------", ("发件人", "发送时间", "收件人", "主题"),
           "以下是转发的邮件：", "-------- 转发的消息 --------", "{who} 于2026年1月5日周一 10:02写道："),
    "el": ("Είναι αληθινό;", "---------- Προωθημένο μήνυμα ---------", ("Από", "Στάλθηκε", "Προς", "Θέμα"),
           "Έναρξη προωθημένου μηνύματος:", "-------- Προωθημένο μήνυμα --------", "Στις Δευ 5 Ιαν 2026 στις 10:02, ο/η {who} έγραψε:"),
    # languages guard has no templates for: participants write in them all the same
    "sv": ("Är det här äkta?", "---------- Vidarebefordrat meddelande ---------", ("Från", "Skickat", "Till", "Ämne"),
           "Vidarebefordrat brev:", "-------- Vidarebefordrat meddelande --------", "Den mån 5 jan. 2026 kl 10:02 skrev {who}:"),
    "da": ("Er det her ægte?", "---------- Videresendt meddelelse ----------", ("Fra", "Sendt", "Til", "Emne"),
           "Start på videresendt besked:", "-------- Videresendt meddelelse --------", "Den man. 5. jan. 2026 kl. 10.02 skrev {who}:"),
    "nb": ("Er dette ekte?", "---------- Videresendt melding ---------", ("Fra", "Sendt", "Til", "Emne"),
           "Begynnelse på videresendt melding:", "-------- Videresendt melding --------", "man. 5. jan. 2026 kl. 10:02 skrev {who}:"),
    "fi": ("Onko tämä aito?", "---------- Välitetty viesti ---------", ("Lähettäjä", "Lähetetty", "Vastaanottaja", "Aihe"),
           "Välitetty viesti alkaa:", "-------- Välitetty viesti --------", "ma 5. tammik. 2026 klo 10.02 {who} kirjoitti:"),
    "ro": ("Este real?", "---------- Mesaj redirecționat ---------", ("De la", "Trimis", "Către", "Subiect"),
           "Începutul mesajului redirecționat:", "-------- Mesaj redirecționat --------", "Pe lun., 5 ian. 2026 la 10:02, {who} a scris:"),
    "cs": ("Je to pravé?", "---------- Přeposlaná zpráva ---------", ("Od", "Odesláno", "Komu", "Předmět"),
           "Začátek přeposlané zprávy:", "-------- Přeposlaná zpráva --------", "po 5. 1. 2026 v 10:02 odesílatel {who} napsal:"),
    "sk": ("Je to skutočné?", "---------- Preposlaná správa ---------", ("Od", "Odoslané", "Komu", "Predmet"),
           "Začiatok preposlanej správy:", "-------- Preposlaná správa --------", "po 5. 1. 2026 o 10:02 {who} napísal(a):"),
    "hu": ("Ez valódi?", "---------- Továbbított üzenet ---------", ("Feladó", "Elküldve", "Címzett", "Tárgy"),
           "Továbbított levél kezdete:", "-------- Továbbított üzenet --------", "{who} ezt írta (időpont: 2026. jan. 5., H, 10:02):"),
    "ru": ("Это настоящее?", "---------- Пересылаемое сообщение ---------", ("От", "Отправлено", "Кому", "Тема"),
           "Начало переадресованного сообщения:", "-------- Пересылаемое сообщение --------", "05.01.2026 10:02, {who} пишет:"),
    "uk": ("Це справжнє?", "---------- Переслане повідомлення ---------", ("Від", "Надіслано", "Кому", "Тема"),
           "Початок пересланого повідомлення:", "-------- Переслане повідомлення --------", "05.01.2026 10:02, {who} пише:"),
    "bg": ("Истинско ли е?", "---------- Препратено съобщение ---------", ("От", "Изпратено", "До", "Относно"),
           "Начало на препратеното съобщение:", "-------- Препратено съобщение --------", "На пн, 5.01.2026 г. в 10:02 ч. {who} написа:"),
    "ar": ("هل هذا حقيقي؟", "---------- رسالة معاد توجيهها ---------", ("من", "تم الإرسال", "إلى", "الموضوع"),
           "بداية الرسالة المعاد توجيهها:", "-------- الرسالة المعاد توجيهها --------", "في الاثنين، 5 يناير 2026 في 10:02 ص، كتب {who}:"),
    "he": ("זה אמיתי?", "---------- הודעה שהועברה ---------", ("מאת", "נשלח", "אל", "נושא"),
           "תחילת הודעה שהועברה:", "-------- הודעה שהועברה --------", "ב-5.1.2026 10:02, {who} כתב:"),
    "fa": ("آیا این واقعی است؟", "---------- پیام بازارسال شده ---------", ("از", "ارسال شده", "به", "موضوع"),
           "شروع پیام بازارسال شده:", "-------- پیام بازارسال شده --------", "{who} نوشت:"),
    "ko": ("이거 진짜인가요?", "---------- 전달된 메일 ---------", ("보낸 사람", "보낸 날짜", "받는 사람", "제목"),
           "전달된 메일:", "-------- 전달된 메시지 --------", "2026년 1월 5일 (월) 오전 10:02, {who}님이 작성:"),
    "ja": ("これは本物ですか？", "---------- 転送されたメッセージ ---------", ("差出人", "送信日時", "宛先", "件名"),
           "転送されたメッセージ:", "-------- 転送メッセージ --------", "2026/01/05 10:02、{who}のメール:"),
    "vi": ("Cái này có thật không?", "---------- Thư được chuyển tiếp ---------", ("Từ", "Đã gửi", "Đến", "Chủ đề"),
           "Bắt đầu thư được chuyển tiếp:", "-------- Thư đã chuyển tiếp --------", "Vào Th 2, 5 thg 1, 2026 vào lúc 10:02 {who} đã viết:"),
    "id": ("Apakah ini asli?", "---------- Pesan yang diteruskan ---------", ("Dari", "Dikirim", "Kepada", "Subjek"),
           "Awal pesan yang diteruskan:", "-------- Pesan Terusan --------", "Pada Sen, 5 Jan 2026 pukul 10.02 {who} menulis:"),
}

# the labels a client writes in its own header block, where they differ from Outlook's:
# Thunderbird (subject, date, from, to), Apple Mail (from, subject, date, to), and the marker of
# Outlook desktop's "original message" and of Android's (Samsung) mail app
CLIENT_LABELS = {
    "en": (("Subject", "Date", "From", "To"), ("From", "Subject", "Date", "To"), "-----Original Message-----",
           "-------- Original message --------"),
    "es": (("Asunto", "Fecha", "De", "Para"), ("De", "Asunto", "Fecha", "Para"), "-----Mensaje original-----",
           "-------- Mensaje original --------"),
    "ca": (("Assumpte", "Data", "De", "A"), ("De", "Assumpte", "Data", "Per a"), "-----Missatge original-----",
           "-------- Missatge original --------"),
    "fr": (("Sujet", "Date", "De", "Pour"), ("De", "Objet", "Date", "À"), "-----Message d'origine-----",
           "-------- Message d'origine --------"),
    "de": (("Betreff", "Datum", "Von", "An"), ("Von", "Betreff", "Datum", "An"), "-----Ursprüngliche Nachricht-----",
           "-------- Ursprüngliche Nachricht --------"),
    "it": (("Oggetto", "Data", "Mittente", "A"), ("Da", "Oggetto", "Data", "A"), "-----Messaggio originale-----",
           "-------- Messaggio originale --------"),
    "pt": (("Assunto", "Data", "De", "Para"), ("De", "Assunto", "Data", "Para"), "-----Mensagem original-----",
           "-------- Mensagem original --------"),
    "nl": (("Onderwerp", "Datum", "Van", "Aan"), ("Van", "Onderwerp", "Datum", "Aan"), "-----Oorspronkelijk bericht-----",
           "-------- Oorspronkelijk bericht --------"),
    "pl": (("Temat", "Data", "Od", "Do"), ("Od", "Temat", "Data", "Do"), "-----Wiadomość oryginalna-----",
           "-------- Oryginalna wiadomość --------"),
    "tr": (("Konu", "Tarih", "Kimden", "Kime"), ("Kimden", "Konu", "Tarih", "Alıcı"), "-----Orijinal Mesaj-----",
           "-------- Orijinal mesaj --------"),
    "zh": (("主题", "日期", "发件人", "收件人"), ("发件人", "主题", "日期", "收件人"), "-----原始邮件-----",
           "-------- 原始信息 --------"),
    "el": (("Θέμα", "Ημερομηνία", "Από", "Προς"), ("Από", "Θέμα", "Ημερομηνία", "Προς"), "-----Αρχικό μήνυμα-----",
           "-------- Αρχικό μήνυμα --------"),
    "sv": (("Ämne", "Datum", "Från", "Till"), ("Från", "Ämne", "Datum", "Till"), "-----Ursprungligt meddelande-----",
           "-------- Originalmeddelande --------"),
    "da": (("Emne", "Dato", "Fra", "Til"), ("Fra", "Emne", "Dato", "Til"), "-----Oprindelig meddelelse-----",
           "-------- Oprindelig meddelelse --------"),
    "nb": (("Emne", "Dato", "Fra", "Til"), ("Fra", "Emne", "Dato", "Til"), "-----Opprinnelig melding-----",
           "-------- Opprinnelig melding --------"),
    "fi": (("Aihe", "Päivämäärä", "Lähettäjä", "Vastaanottaja"), ("Lähettäjä", "Aihe", "Päivämäärä", "Vastaanottaja"),
           "-----Alkuperäinen viesti-----", "-------- Alkuperäinen viesti --------"),
    "ro": (("Subiect", "Dată", "De la", "Către"), ("De la", "Subiect", "Dată", "Către"), "-----Mesaj original-----",
           "-------- Mesaj original --------"),
    "cs": (("Předmět", "Datum", "Od", "Komu"), ("Od", "Předmět", "Datum", "Komu"), "-----Původní zpráva-----",
           "-------- Původní zpráva --------"),
    "sk": (("Predmet", "Dátum", "Od", "Komu"), ("Od", "Predmet", "Dátum", "Komu"), "-----Pôvodná správa-----",
           "-------- Pôvodná správa --------"),
    "hu": (("Tárgy", "Dátum", "Feladó", "Címzett"), ("Feladó", "Tárgy", "Dátum", "Címzett"), "-----Eredeti üzenet-----",
           "-------- Eredeti üzenet --------"),
    "ru": (("Тема", "Дата", "От", "Кому"), ("От", "Тема", "Дата", "Кому"), "-----Исходное сообщение-----",
           "-------- Оригинальное сообщение --------"),
    "uk": (("Тема", "Дата", "Від", "Кому"), ("Від", "Тема", "Дата", "Кому"), "-----Оригінальне повідомлення-----",
           "-------- Оригінальне повідомлення --------"),
    "bg": (("Тема", "Дата", "От", "До"), ("От", "Тема", "Дата", "До"), "-----Оригинално съобщение-----",
           "-------- Оригинално съобщение --------"),
    "ar": (("الموضوع", "التاريخ", "من", "إلى"), ("من", "الموضوع", "التاريخ", "إلى"), "-----الرسالة الأصلية-----",
           "-------- الرسالة الأصلية --------"),
    "he": (("נושא", "תאריך", "מאת", "אל"), ("מאת", "נושא", "תאריך", "אל"), "-----הודעה מקורית-----",
           "-------- הודעה מקורית --------"),
    "fa": (("موضوع", "تاریخ", "از", "به"), ("از", "موضوع", "تاریخ", "به"), "-----پیام اصلی-----",
           "-------- پیام اصلی --------"),
    "ko": (("제목", "날짜", "보낸 사람", "받는 사람"), ("보낸 사람", "제목", "날짜", "받는 사람"), "-----원본 메시지-----",
           "-------- 원본 메시지 --------"),
    "ja": (("件名", "日付", "差出人", "宛先"), ("差出人", "件名", "日付", "宛先"), "-----元のメッセージ-----",
           "-------- 元のメッセージ --------"),
    "vi": (("Chủ đề", "Ngày", "Từ", "Đến"), ("Từ", "Chủ đề", "Ngày", "Đến"), "-----Thư gốc-----", "-------- Thư gốc --------"),
    "id": (("Subjek", "Tanggal", "Dari", "Kepada"), ("Dari", "Subjek", "Tanggal", "Kepada"), "-----Pesan Asli-----",
           "-------- Pesan asli --------"),
}
WHO = f"Stays Desk <{SUSPECT}>"


def _gmail(lang):
    own, marker, lab, *_ = LANGS[lang]
    return f"{own}\n\n{marker}\n{lab[0]}: {WHO}\nDate: Mon, 5 Jan 2026 at 10:02\n{lab[3]}: {SUBJECT}\n{lab[2]}: <me@uni.example>\n\n{SUSPECT_TEXT}\n"


def _outlook_line(lang):
    own, _, lab, *_ = LANGS[lang]
    return (f"{own}\n\n________________________________\n{lab[0]}: {WHO}\n{lab[1]}: 05/01/2026 10:02\n"
            f"{lab[2]}: me@uni.example\n{lab[3]}: {SUBJECT}\n\n{SUSPECT_TEXT}\n")


def _outlook_bare(lang):
    # Outlook desktop: no separator, the sender's name without an address
    own, _, lab, *_ = LANGS[lang]
    return (f"{own}\n\n{lab[0]}: Stays Desk\n{lab[1]}: 05/01/2026 10:02\n{lab[2]}: Me\n{lab[3]}: {SUBJECT}\n\n"
            f"{SUSPECT_TEXT}\nReply to {SUSPECT}\n")


def _apple(lang):
    own, _, lab, apple, *_ = LANGS[lang]
    return f"{own}\n\nSent from my iPhone\n\n{apple}\n\n{lab[0]}: {WHO}\n{lab[3]}: {SUBJECT}\nDate: 5 January 2026 at 10:02:00 CET\n{lab[2]}: me@uni.example\n\n{SUSPECT_TEXT}\n"


def _thunderbird(lang):
    own, _, lab, _, tb, _ = LANGS[lang]
    return f"{own}\n\n\n{tb}\n{lab[3]}: \t{SUBJECT}\nDate: \tMon, 5 Jan 2026 10:02:00 +0100\n{lab[0]}: \t{WHO}\n{lab[2]}: \tme@uni.example\n\n\n\n{SUSPECT_TEXT}\n"


def _android(lang):
    own, _, lab, *_ = LANGS[lang]
    return f"{own}\n\n-------- Original message --------\n{lab[0]}: {WHO}\nDate: 05/01/2026 10:02 (GMT+01:00)\n{lab[2]}: me@uni.example\n{lab[3]}: {SUBJECT}\n\n{SUSPECT_TEXT}\n"


def _thunderbird_own_labels(lang):
    own, *_, tb, _ = LANGS[lang]
    subject, date, from_, to = CLIENT_LABELS[lang][0]
    return (f"{own}\n\n\n{tb}\n{subject}: \t{SUBJECT}\n{date}: \tMon, 5 Jan 2026 10:02:00 +0100\n"
            f"{from_}: \t{WHO}\n{to}: \tme@uni.example\n\n\n\n{SUSPECT_TEXT}\n")


def _apple_own_labels(lang):
    own, _, _, apple, *_ = LANGS[lang]
    from_, subject, date, to = CLIENT_LABELS[lang][1]
    return (f"{own}\n\nSent from my iPhone\n\n{apple}\n\n{from_}: {WHO}\n{subject}: {SUBJECT}\n"
            f"{date}: 5 January 2026 at 10:02:00 CET\n{to}: me@uni.example\n\n{SUSPECT_TEXT}\n")


def _outlook_original(lang):
    own, _, lab, *_ = LANGS[lang]
    marker = CLIENT_LABELS[lang][2]
    return (f"{own}\n\n{marker}\n{lab[0]}: {WHO}\n{lab[1]}: Monday, 5 January 2026 10:02\n{lab[2]}: me@uni.example\n"
            f"{lab[3]}: {SUBJECT}\n\n{SUSPECT_TEXT}\n")


def _android_own_marker(lang):
    own, _, lab, *_ = LANGS[lang]
    marker = CLIENT_LABELS[lang][3]
    return (f"{own}\n\nSent from my Galaxy\n\n\n{marker}\n{lab[0]}: {WHO}\nDate: 05/01/2026 10:02 (GMT+01:00)\n"
            f"{lab[2]}: me@uni.example\n{lab[3]}: {SUBJECT}\n\n{SUSPECT_TEXT}\n")


def _gmail_english_labels(lang):
    # Gmail localises the marker and "From" but writes Date, Subject and To in English in many locales
    own, marker, lab, *_ = LANGS[lang]
    return f"{own}\n\n{marker}\n{lab[0]}: {WHO}\nDate: Mon, 5 Jan 2026 at 10:02\nSubject: {SUBJECT}\nTo: <me@uni.example>\n\n{SUSPECT_TEXT}\n"


def _set_off(prefix: str = "", gap: str = ""):
    """A header block typed or copied by hand (two lines are enough), each line after ``prefix``:
    nothing (pasted), "| " (a paste quoted by hand) or an indentation; ``gap`` is the line
    between the headers and the text."""
    def build(lang):
        own, _, lab, *_ = LANGS[lang]
        return f"{own}\n\n{prefix}{lab[0]}: {WHO}\n{prefix}{lab[3]}: {SUBJECT}\n{gap}\n{prefix}{SUSPECT_TEXT}\n"
    return build


_pasted = _set_off()
_pipe_quoted = _set_off("| ", "|")
_indented = _set_off("    ")


def _quoted(lang):
    own, *_, attribution = LANGS[lang]
    quoted = "\n".join("> " + line for line in SUSPECT_TEXT.split(". "))
    return f"{own}\n\n{attribution.format(who=WHO)}\n{quoted}\n"


PLAIN_FORMATS = {"pipe-quoted": _pipe_quoted, "indented": _indented, "gmail": _gmail, "gmail-english-labels": _gmail_english_labels, "outlook-line": _outlook_line,
                 "outlook-bare": _outlook_bare, "outlook-original": _outlook_original, "apple": _apple,
                 "apple-own-labels": _apple_own_labels, "thunderbird": _thunderbird,
                 "thunderbird-own-labels": _thunderbird_own_labels, "android": _android,
                 "android-own-marker": _android_own_marker, "pasted": _pasted, "quoted": _quoted}


def _plain_message(body: str, subject: str = "Fwd: " + SUBJECT) -> bytes:
    return (f"From: Ana <ana@uni.example>\nTo: events@crm.cat\nSubject: {subject}\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n").encode() + \
        base64.encodebytes(body.encode())


@pytest.mark.parametrize("lang", sorted(LANGS))
@pytest.mark.parametrize("fmt", sorted(PLAIN_FORMATS))
def test_inline_embedded_message_is_found(fmt, lang):
    m = parse(_plain_message(PLAIN_FORMATS[fmt](lang)))
    assert m.forwarded, f"{fmt}/{lang}: no embedded message found"
    inner = m.forwarded[0]
    assert "card number" in inner.text
    assert "card number" not in m.text, "the suspect's words counted as the author's"
    assert m.text.strip().startswith(LANGS[lang][0])
    if fmt != "outlook-bare":
        assert inner.from_ is not None and inner.from_.addr == SUSPECT
    if fmt not in ("quoted",):
        assert inner.subject == SUBJECT
    assert m.forward_style == ("quoted" if fmt == "quoted" else m.forward_style)


@pytest.mark.parametrize("fmt", ["pipe-quoted", "indented", "quoted"])
def test_the_authors_words_below_a_set_off_paste_are_the_authors(fmt):
    """A paste set off by "| ", ">" or indentation ends where the author writes on below it."""
    after = "I already paid them 200 euros by card."
    m = parse(_plain_message(PLAIN_FORMATS[fmt]("en") + "\n" + after + "\n"))
    assert m.forwarded and "card number" in m.forwarded[0].text
    assert after not in m.forwarded[0].text
    assert after in m.text and "card number" not in m.text


def test_an_indented_paste_without_headers_is_embedded():
    paste = "\n".join("    " + x for x in ("Dear participant,", "your room is pending validation. To keep it,",
                                             "pay the deposit of 275 EUR by card on our platform today:",
                                             "https://stays-booking.example/pay", "Accommodation Office"))
    m = parse(_plain_message(f"Dear office,\n\nI received this:\n\n{paste}\n\nI already transferred it. Is it you?\n"))
    assert m.forwarded and "deposit of 275 EUR" in m.forwarded[0].text
    assert "deposit of 275" not in m.text and "I already transferred it" in m.text


def test_an_indented_signature_is_not_a_paste():
    m = parse(_plain_message("Dear office, could I get an invoice for my fee?\n\n    Dr. Ana Ruiz\n    Dept. of Maths\n"
                             "    Universidad de Ejemplo\n", subject="Invoice"))
    assert m.forwarded == ()


@pytest.mark.parametrize("opening,closing", [('"', '"'), ("“", "”"), ("«", "»"), ("„", "“"), ("「", "」")])
def test_a_passage_between_quotation_marks_below_a_colon_is_embedded(opening, closing):
    passage = (f"{opening}Our records show you have not booked your room yet. As the official housing\n"
               f"partner, we ask you to confirm your dates and card guarantee within 48 hours.{closing}")
    m = parse(_plain_message(f"Hello,\n\nI received this from an agency:\n\n{passage}\n\nI did not answer. Is it you?\n",
                             subject="Agency"))
    assert m.forwarded and m.forward_style == "pasted"
    assert "card guarantee" in m.forwarded[0].text and "card guarantee" not in m.text
    assert "I did not answer" in m.text and m.text.startswith("Hello")


def test_a_short_quotation_in_running_text_is_not_a_message():
    m = parse(_plain_message('Dear office, my supervisor said:\n"please ask them about the fee."\nThanks\n', subject="Fee"))
    assert m.forwarded == ()


def test_an_html_forward_with_each_header_in_its_own_block_is_found():
    """Webmail writes one <div> per line: the text has a blank line between header lines."""
    html = ("<div><br></div><div>________________________________</div>"
            f"<div>From: Stays Desk &lt;{SUSPECT}&gt;</div><div>Sent: Tuesday, 30 December 2025 23:10</div>"
            f"<div>To: Ana &lt;ana@uni.example&gt;</div><div>Subject: {SUBJECT}</div><div><br></div>"
            f"<div>{SUSPECT_TEXT}</div>")
    raw = (b"From: Ana <ana@uni.example>\nTo: events@crm.cat\nSubject: FW: x\nMIME-Version: 1.0\n"
           b"Content-Type: text/html; charset=utf-8\n\n" + html.encode())
    m = parse(raw)
    assert m.forwarded and m.forwarded[0].from_.addr == SUSPECT and m.forwarded[0].subject == SUBJECT
    assert "card number" in m.forwarded[0].text and "card number" not in m.text


def test_a_forward_not_set_off_runs_to_the_end():
    m = parse(_plain_message(_gmail("en") + "\nRegards, the desk\n"))
    assert "Regards, the desk" in m.forwarded[0].text


def test_a_table_row_is_not_a_quote():
    m = parse(_plain_message("Dear office, my dates:\n| arrival | 5 May |\n| departure | 9 May |\nThanks\n",
                             subject="Dates"))
    assert m.forwarded == () and "arrival" in m.text


@pytest.mark.parametrize("lang", sorted(LANGS))
def test_html_blockquote_is_a_quoted_message(lang):
    own, *_, attribution = LANGS[lang]
    html = (f"<div dir='ltr'><p>{own}</p></div><br><div class='gmail_quote'><div>{attribution.format(who=WHO)}</div>"
            f"<blockquote class='gmail_quote'><p>{SUSPECT_TEXT}</p></blockquote></div>")
    raw = (b"From: Ana <ana@uni.example>\nTo: events@crm.cat\nSubject: Re: x\nMIME-Version: 1.0\n"
           b"Content-Type: text/html; charset=utf-8\n\n" + html.encode())
    m = parse(raw)
    assert m.forward_style == "quoted"
    assert "card number" in m.forwarded[0].text and "card number" not in m.text


def test_attached_message_is_embedded_with_its_own_headers():
    inner = (f"From: {WHO}\nTo: me@uni.example\nSubject: {SUBJECT}\nMessage-ID: <x@stays>\n\n{SUSPECT_TEXT}\n")
    raw = ("From: Ana <ana@uni.example>\nTo: events@crm.cat\nSubject: Fwd: x\nMIME-Version: 1.0\n"
           "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nIs this you?\n"
           "--b\nContent-Type: message/rfc822\nContent-Disposition: attachment; filename=x.eml\n\n" + inner + "--b--\n")
    m = parse(raw.encode())
    assert m.forward_style == "rfc822" and m.forwarded[0].from_.addr == SUSPECT
    assert m.forwarded[0].subject == SUBJECT and m.text.strip() == "Is this you?"


def test_a_delivery_report_is_never_a_forward():
    raw = ("From: Mail Delivery System <MAILER-DAEMON@mx.uni.example>\nTo: events@crm.cat\nSubject: Undelivered Mail\n"
           "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
           "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
           "--b\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
           "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.uni.example\n\n"
           "Final-Recipient: rfc822; x@uni.example\nAction: failed\nStatus: 5.1.1\n"
           "--b\nContent-Type: message/rfc822\n\nFrom: events@crm.cat\nTo: x@uni.example\nSubject: Your registration\n\n"
           "Dear participant, your registration is confirmed.\n--b--\n")
    m = parse(raw.encode())
    assert m.forwarded == () and m.report_type == "delivery-status"
    assert "Reporting-MTA" not in m.text


def test_a_two_line_label_in_running_text_is_not_a_header_block():
    m = parse(_plain_message("Dear office,\nfrom: the airport I take the bus.\nThanks\n", subject="Question"))
    assert m.forwarded == ()


@pytest.mark.parametrize("marker,labels", [
    ("-------- 转发邮件信息 --------", ("发件人", "发送日期", "收件人", "主题")),
    ("------------------ 原始邮件 ------------------", ("发件人", "发送时间", "收件人", "主题")),
    ("-----Wiadomość przekazana-----", ("Od", "Wysłano", "Do", "Temat")),
    ("---------- İletilen ileti ----------", ("Gönderen", "Tarih", "Kime", "Konu")),
])
def test_forwards_of_other_languages_clients(marker, labels):
    body = (f"这个是真的吗？\n\n{marker}\n{labels[0]}：{WHO}\n{labels[1]}：2026-01-05 10:02\n"
            f"{labels[2]}：me@uni.example\n{labels[3]}：{SUBJECT}\n\n{SUSPECT_TEXT}\n")
    m = parse(_plain_message(body))
    assert m.forwarded and m.forwarded[0].from_.addr == SUSPECT and m.forwarded[0].subject == SUBJECT
    assert "card number" not in m.text


def _html_outlook(lang):
    own, _, lab, *_ = LANGS[lang]
    return (f"<html><body><div>{own}</div><div id='appendonsend'></div><hr style='display:inline-block;width:98%'>"
            f"<div id='divRplyFwdMsg' dir='ltr'><font face='Calibri' color='#000000'><b>{lab[0]}:</b> {HTML_WHO}<br>"
            f"<b>{lab[1]}:</b> 5/1/2026 10:02<br><b>{lab[2]}:</b> me@uni.example<br><b>{lab[3]}:</b> {SUBJECT}</font>"
            f"<div>&nbsp;</div></div><div><p>{SUSPECT_TEXT}</p></div></body></html>")


def _html_thunderbird(lang):
    own, *_, tb, _ = LANGS[lang]
    rows = "".join(f"<tr><th valign='BASELINE' nowrap='nowrap' align='RIGHT'>{label}: </th><td>{value}</td></tr>"
                   for label, value in zip(CLIENT_LABELS[lang][0], (SUBJECT, "Mon, 5 Jan 2026 10:02:00 +0100", HTML_WHO,
                                                                      "me@uni.example")))
    return (f"<html><body><p>{own}</p><div class='moz-forward-container'><br><br>{tb}"
            f"<table class='moz-email-headers-table' border='0' cellpadding='0' cellspacing='0'><tbody>{rows}</tbody>"
            f"</table><br><p>{SUSPECT_TEXT}</p></div></body></html>")


def _html_apple(lang):
    own, _, _, apple, *_ = LANGS[lang]
    from_, subject, date, to = CLIENT_LABELS[lang][1]
    return (f"<html><body dir='auto'>{own}<br><br><div dir='ltr'>Sent from my iPhone</div><div dir='ltr'><br>"
            f"<blockquote type='cite'>{apple}<br><br></blockquote></div><blockquote type='cite'><div dir='ltr'>"
            f"<b>{from_}:</b> {HTML_WHO}<br><b>{date}:</b> 5 January 2026 at 10:02:00 CET<br><b>{to}:</b> me@uni.example"
            f"<br><b>{subject}:</b> <b>{SUBJECT}</b><br><br></div></blockquote><blockquote type='cite'><div dir='ltr'>"
            f"<p>{SUSPECT_TEXT}</p></div></blockquote></body></html>")


def _html_gmail(lang):
    own, marker, lab, *_ = LANGS[lang]
    return (f"<div dir='ltr'>{own}<br><br><div class='gmail_quote'><div dir='ltr' class='gmail_attr'>{marker}<br>"
            f"{lab[0]}: <strong class='gmail_sendername' dir='auto'>Stays Desk</strong> <span dir='auto'>&lt;{SUSPECT}&gt;"
            f"</span><br>Date: Mon, 5 Jan 2026 at 10:02<br>Subject: {SUBJECT}<br>To: &lt;me@uni.example&gt;<br></div>"
            f"<br><br><div dir='ltr'><p>{SUSPECT_TEXT}</p></div></div></div>")


HTML_WHO = f"Stays Desk &lt;{SUSPECT}&gt;"
HTML_FORMATS = {"outlook": _html_outlook, "thunderbird": _html_thunderbird, "apple": _html_apple, "gmail": _html_gmail}


@pytest.mark.parametrize("lang", sorted(LANGS))
@pytest.mark.parametrize("client", sorted(HTML_FORMATS))
def test_html_only_forward_of_each_client_is_found(client, lang):
    """HTML-only forwards as each client writes them (the tags and classes are the clients' own)."""
    raw = (b"From: Ana <ana@uni.example>\nTo: events@crm.cat\nSubject: Fwd: x\nMIME-Version: 1.0\n"
           b"Content-Type: text/html; charset=utf-8\n\n" + HTML_FORMATS[client](lang).encode())
    m = parse(raw)
    assert m.forwarded, f"{client}/{lang}: no embedded message found"
    inner = m.forwarded[0]
    assert inner.from_ is not None and inner.from_.addr == SUSPECT and inner.subject == SUBJECT
    assert "card number" in inner.text and "card number" not in m.text
    assert m.text.strip().startswith(LANGS[lang][0])


def test_html_text_keeps_words_apart_and_header_lines_together():
    from guard.mail.message import html_to_text

    assert html_to_text("Is this real?<table><tr><td>Subject:</td><td>x</td></tr></table>").split("\n")[0] == "Is this real?"
    text = html_to_text("<div><b>From:</b> a@b.example</div><div><b>Subject:</b> x</div>")
    assert text == "From: a@b.example\nSubject: x"


@pytest.mark.parametrize("who", ["Núria Hernández <nhernandez@crm.cat>", "Núria Hernández (<nhernandez@crm.cat>)",
                                 '"Hernández, Núria" <nhernandez@crm.cat>', "<nhernandez@crm.cat>",
                                 "nhernandez@crm.cat"])
def test_quoted_thread_sender_is_read_from_any_attribution_shape(who):
    """Gmail in Catalan and Spanish writes "Name (<address>)": the sender is the address, never a comment."""
    body = (f"Gràcies! Puc canviar la sessió?\n\nEl dl., 20 d'abr. 2026 a les 9:12, {who} va escriure:\n"
            "> Us adjunto el programa provisional.\n> Salutacions,\n> Núria\n")
    m = parse(_plain_message(body, subject="Re: Programa"))
    assert m.forward_style == "quoted"
    assert m.forwarded[0].from_ is not None and m.forwarded[0].from_.addr == "nhernandez@crm.cat"
    assert "Hernández" in m.forwarded[0].from_.name or who.startswith(("<", "n"))
