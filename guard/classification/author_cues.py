"""Cues in the writer's own words: features of the intent model, never a decision.

"Already paid" is said in countless ways ("the money left my account", "vaig fer el Bizum",
"我已经通过微信转账支付了"), and so is "someone wrote to me pretending to be you, is it real?", so no
phrase list can decide paid or report; the learned intent model does, over the writer's own words.
What a linear model over hashed n-grams sees poorly, with a few hundred examples in a dozen
languages, is the shape that most of those wordings share, so a few sentence-level facts are
counted with small hand-written word lists per language (folded forms, :func:`guard.mail.textutil.fold`):

* ``paid_act``: in one sentence, a verb of handing over (paid, transferred, gave, sent, entered,
  typed) with something of value (card, bank account, money, passport, password), not negated;
  ``paid_act_negated``: the same with a negation in reach ("I have not paid anything");
  ``harm_aftermath``: the bank blocked the card, the account was debited, a refund is asked for;
* ``doubt``: sentences with a word of suspicion or authenticity (scam, fake, legit, real?);
* ``third_party_contact``: sentences about being contacted (called me, a WhatsApp, I received);
* ``quoted_names``: pairs of quotation marks, as people quote a suspect's self-given name
  ("CRM Accommodation Desk", «oficina de alojamiento»);
* ``absence``: sentences saying the writer is away (on holiday, travelling, on leave, "fora del
  despatx", "urlop"), which is what an absence note says whether or not its server marked it as
  automatic (many send no header at all); a question beside it makes an inquiry again, and the
  model weighs the two.

Work is linear in the text: one fold, a split on sentence punctuation, set look-ups per word; the
caller bounds the text (``intent.MAX_AUTHOR_CHARS``).

:data:`FINGERPRINT` names the word lists; the intent model records it when trained and refuses to
load against different lists (its weights were learned over these exact counts).
"""

from __future__ import annotations

import hashlib
import re

from guard.mail.textutil import fold

#: Verbs of paying: money is implied ("paid!!", "ja vaig pagar", "zapłaciłam"), folded (accents stripped).
PAY = frozenset("""
paid transferred wired
pague pagado pagamos pagaste transferi transferido
pagat pagada transferit
paye payee payes vire verse regle
bezahlt uberwiesen
pagato pagata versato
paguei transferi
betaald overgemaakt
zapłaciłem zapłaciłam przelałem przelałam
odedim yatırdım
πληρωσα
""".split())

#: Verbs of handing something over, counted with something of value in the same sentence.
ACT = PAY | frozenset("""
pay sent gave given entered typed filled provided submitted uploaded handed replied logged signed
di dado dimos envie enviado mande mandado introduje introducido rellene meti hice ingrese puesto
donat enviat introduit fet vaig vam omplert
donne envoye transmis saisi rempli communique fourni
gegeben geschickt eingegeben ausgefullt gesendet ubermittelt angegeben geleistet
dato inviato inserito compilato fatto mandato partito effettuato
enviei dei introduzi preenchi pago mandei fiz digitei coloquei
gegeven gestuurd ingevuld ingevoerd verstuurd
podałem podałam wysłałem wysłałam wpisałem wpisałam
gonderdim verdim girdim
εστειλα εδωσα εβαλα
""".split())

#: Things of value: payment means, money, identity documents, credentials.
ASSET = frozenset("""
card cards visa mastercard iban bic account bank transfer deposit money euros eur usd gbp dollars fee payment
passport password login credentials details cvv cvc code pin
tarjeta tarjetas cuenta transferencia deposito fianza dinero pasaporte contrasena usuario datos dni pago senal
targeta compte diners passaport contrasenya dades pagament bizum
carte virement acompte caution argent passeport mot coordonnees paiement identifiants
karte kreditkarte konto uberweisung anzahlung geld reisepass pass passkopie passwort kennwort zugangsdaten
kartennummer daten zahlung kreditkartendaten kartendaten kontodaten bankdaten
carta conto bonifico acconto caparra soldi passaporto dati pagamento credenziali
cartao conta sinal dinheiro passaporte senha dados
kaart creditcard rekening overboeking aanbetaling paspoort wachtwoord gegevens betaling tikkie
karty karta przelew zaliczka pieniadze paszport hasło dane
kart hesap havale kapora para pasaport sifre bilgilerimi
paypal western union wise revolut
καρτα διαβατηριο κωδικο εμβασμα χρηματα
""".split())

#: Negation words: "I have not paid anything", "no les he dado nada", "ich habe nichts gegeben".
NEGATION = frozenset("""
not never no nothing haven't didn't don't nada nunca ni pas rien jamais nicht nichts nie kein keine non
niente mai nao niet niets nooit geen nic degil hic hicbir ningun ninguna nenhum nulla δεν
""".split())

#: What follows a payment to a fraudster: a blocked card, a debit, a refund asked for.
AFTERMATH = frozenset("""
blocked cancelled canceled charged debited stolen refund reimbursed chargeback
bloqueado bloqueada anulado cancelado cobrado cargado robado reembolso devolucion
bloquejat bloquejada anul·lat cancel·lat cobrat retorn
bloque bloquee opposition debite remboursement
gesperrt storniert abgebucht ruckerstattung ruckbuchung
bloccato bloccata addebitato rimborso stornato
bloqueou estorno
geblokkeerd afgeschreven terugbetaling
zablokowany zablokowana zwrot obciazono
bloke iade
μπλοκαρε επιστροφη
""".split())

#: Words of suspicion or authenticity: "is this a scam?", "¿es real?", "c'est une arnaque ?".
DOUBT = frozenset("""
scam scams fraud fraudulent fake phishing suspicious suspect legit legitimate genuine real authentic worried
dodgy strange odd weird impersonating impostor
estafa estafado fraude falso falsa sospechoso sospechosa engano timo legitimo autentico
frau fals sospitos sospitosa enganyat
arnaque escroquerie faux fausse suspecte hameconnage louche legitime authentique
betrug betruger betrugerisch gefalscht falsch verdachtig echt seltsam
truffa truffato frode sospetto sospetta vero
golpe suspeito suspeita burla verdadeiro
oplichting oplichter nep vals verdacht
oszustwo oszust oszusci podejrzany podejrzana prawdziwy
dolandiricilik dolandirici sahte supheli gercek
απατη ψευτικο υποπτο γνησιο
""".split())

#: Words of being contacted: "they called me", "a WhatsApp", "I received an e-mail".
CONTACT = frozenset("""
called phoned rang call sms text whatsapp telegram wechat contacted wrote emailed message email mail received got
llamo llamada mensaje correo recibi escribio contacto
trucat trucada missatge correu rebut escrit
appele appel courriel recu ecrit contacte
angerufen anruf nachricht erhalten bekommen geschrieben kontaktiert
chiamato chiamata messaggio ricevuto scritto contattato
ligou ligacao mensagem escreveu contactou
gebeld telefoontje bericht ontvangen gekregen geschreven
zadzwonił zadzwoniła telefon wiadomosc otrzymałem otrzymałam dostałem dostałam napisał
aradı arama mesaj aldım yazdı
τηλεφωνησε μηνυμα ελαβα
""".split())

#: Words of being away: on holiday, travelling, on leave, out of the office. Not the words that also
#: name travel costs or a cancellation ("frais de déplacement", "spese di trasferta", "darse de baja"),
#: which inquiries about reimbursements and registrations use.
ABSENCE = frozenset("""
away absent absence vacation vacations holiday holidays offline travelling traveling sabbatical ooo
ausente ausencia vacaciones viajando
absencia vacances viatjant
absente conge conges
abwesend abwesenheit urlaub dienstreise elternzeit verreist
assente assenza ferie vacanza vacanze
ferias
afwezig afwezigheid vakantie verlof
nieobecny nieobecna nieobecnosc urlop urlopie urlopu
izinliyim tatil tatilde tatildeyim
απουσια αδεια διακοπεσ
""".split())

#: Scripts without spaces between words (Chinese): substrings instead of words.
CJK_PAY = ("已付", "支付了", "已支付", "付了", "转账", "汇款", "已交", "缴纳")
CJK_ACT = CJK_PAY + ("已经", "发了")
CJK_ASSET = ("卡", "护照", "密码", "定金", "元", "欧元", "注册费", "服务费", "账户", "银行")
CJK_NEGATION = ("没有", "未")
CJK_AFTERMATH = ("冻结", "退款")
CJK_DOUBT = ("诈骗", "骗", "可疑", "假冒", "冒充", "真的", "是否", "钓鱼")
CJK_CONTACT = ("收到", "邮件", "微信", "电话", "短信", "联系")
CJK_ABSENCE = ("休假", "外出", "出差", "不在办公室", "假期", "请假")

#: Quotation marks of the languages guard supports (straight, curly, guillemets, low-9, CJK corners).
QUOTE_MARKS = '"“”«»„「」'  # noqa: RUF001

_SENTENCE_ENDS = frozenset(".!?;。！？")
_WORD_CHARS_EXTRA = frozenset("'·")

NAMES = ("paid_act", "paid_act_negated", "harm_aftermath", "doubt", "third_party_contact", "quoted_names", "absence")

#: The counts enter the model scaled to [0, SCALE] (a smaller scale is a stronger prior against the
#: cues): chosen by grouped cross-validation of the own examples (2,480 of them, the payment cues
#: alone). 0.25: paid reports flagged 85.2 %, inquiries routed 95.3 %, inquiries flagged paid 0.4 %;
#: 0.5: 86.8 / 94.6 / 0.9 %; 0.75: 85.2 / 94.4 / 1.1 %. With the doubt, contact and quote cues at
#: 0.25 too (2,840 examples): reports recognised 93.3 -> 96.4 %, paid 86.2 -> 89.0 %.
SCALE = 0.25


def _fingerprint() -> str:
    h = hashlib.sha256()
    for part in (PAY, ACT, ASSET, NEGATION, AFTERMATH, DOUBT, CONTACT, ABSENCE):
        h.update("\n".join(sorted(part)).encode() + b"\0")
    for part in (CJK_PAY, CJK_ACT, CJK_ASSET, CJK_NEGATION, CJK_AFTERMATH, CJK_DOUBT, CJK_CONTACT, CJK_ABSENCE,
                 QUOTE_MARKS):
        h.update("\n".join(part).encode() + b"\0")
    h.update(f"{SCALE}".encode())
    return h.hexdigest()[:16]


FINGERPRINT = _fingerprint()


#: where sentences end: the sentence punctuation, and line breaks (folded text has none, fold
#: collapses white space); one ``re.split`` (``str.translate`` to line breaks and ``split`` gave the
#: same, but translating looks every character of non-ASCII text up in a dictionary)
_SENTENCE_SPLIT = re.compile("[" + re.escape("".join(sorted(_SENTENCE_ENDS))) + "\n]")
#: a word: letters and digits (``str.isalnum``, which is ``\w`` without "_"), with apostrophes and
#: the Catalan middle dot inside; one character class per step, so matching is linear (the
#: definition; :func:`_words` uses :data:`_WORD_NO_UNDERSCORE`, which its test compares with it)
_WORD = re.compile(r"(?:[^\W_]|['·])+")
#: :data:`_WORD` as one character class, for text whose "_" are made spaces (:func:`_words`): the
#: same words, found about twice as fast (no alternation per character)
_WORD_NO_UNDERSCORE = re.compile(r"[\w'·]+")


def _sentences(folded: str) -> list[str]:
    """The non-empty stretches of folded text between sentence punctuation."""
    return [s for s in _SENTENCE_SPLIT.split(folded) if s]


def _words(sentence: str) -> list[str]:
    """The words in order; "l'argent" also gives "argent" (French, Catalan and Italian elision).
    A "_" separates words as a space does, so with it made a space the words are those of
    :data:`_WORD` (tests/unit/classification/test_author_cues.py checks every code point)."""
    found = _WORD_NO_UNDERSCORE.findall(sentence.replace("_", " ") if "_" in sentence else sentence)
    if "'" not in sentence:
        return found
    out = []
    for w in found:
        out.append(w)
        if "'" in w[1:-1] and len(w) > 3:
            out.append(w.rsplit("'", 1)[1])
    return out


#: A negation counts when it stands this many words before the verb ("I have not paid", "no les he
#: dado nada") or between the verb and the thing of value; elsewhere in the sentence it is about
#: something else ("I sent my card details and now they do not answer").
NEGATION_REACH = 3


def _sentence_cues(sentence: str, words: list[str]) -> tuple[bool, bool, bool]:
    """(handed over something of value, the same but negated, an aftermath) for one folded sentence and its words."""
    handed = negated = False
    if not ACT.isdisjoint(words):  # else no verb of paying or handing over (PAY is part of ACT)
        assets = [i for i, w in enumerate(words) if w in ASSET]
        for i, w in enumerate(words):
            if w in PAY or (w in ACT and assets):
                later = [a for a in assets if a > i]
                reach = words[max(0, i - NEGATION_REACH):(later[0] if later else i)]
                if any(x in NEGATION for x in reach):
                    negated = True
                else:
                    handed = True
    cjk = not sentence.isascii()  # the CJK cue strings are not ASCII: an ASCII sentence holds none
    if cjk and not handed and any(c in sentence for c in CJK_ACT):
        cjk_valued = any(c in sentence for c in CJK_PAY) or any(c in sentence for c in CJK_ASSET)
        if cjk_valued:
            if any(n in sentence for n in CJK_NEGATION):
                negated = True
            else:
                handed = True
    after = not AFTERMATH.isdisjoint(words) or (cjk and any(c in sentence for c in CJK_AFTERMATH))
    return handed, negated and not handed, after


def counts(text: str) -> tuple[int, int, int, int, int, int, int]:
    """Per :data:`NAMES`: sentences where the writer handed over something of value, the same
    negated, aftermath sentences, doubt sentences, contact sentences, pairs of quotation marks,
    absence sentences.

    Set tests are ``isdisjoint`` (one C loop, no generator) and the CJK substrings are only looked
    for in sentences that are not ASCII: the intent model calls this for every message."""
    act = negated = after = doubt = contact = away = 0
    for sentence in _sentences(fold(text)):
        words = _words(sentence)
        h, n, a = _sentence_cues(sentence, words)
        act += h
        negated += n
        after += a
        cjk = not sentence.isascii()
        doubt += not DOUBT.isdisjoint(words) or (cjk and any(c in sentence for c in CJK_DOUBT))
        contact += not CONTACT.isdisjoint(words) or (cjk and any(c in sentence for c in CJK_CONTACT))
        away += not ABSENCE.isdisjoint(words) or (cjk and any(c in sentence for c in CJK_ABSENCE))
    quotes = sum(text.count(q) for q in QUOTE_MARKS) // 2
    return act, negated, after, doubt, contact, quotes, away


#: How many of each count make a feature 1 (times SCALE): two of most, three contact sentences or
#: quotes, one absence sentence (an absence note says it once).
_FULL_AT = (2, 2, 2, 2, 3, 3, 1)


def features(text: str) -> tuple[float, ...]:
    """:func:`counts` as model features (names: :data:`NAMES`), each ``SCALE * min(1, n / full)``."""
    return tuple(SCALE * min(1.0, n / full) for n, full in zip(counts(text), _FULL_AT))
