"""Characterisation of :func:`guard.respond.facts.detect_event` and :func:`guard.respond.facts.mentioned_dates`.

The expected results were recorded from the implementation before detection folded the text once
for all events: they pin what detection does today, including the gaps recorded with the dates, so
that a refactoring that changes any of it shows up here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from guard.respond.facts import detect_event, event_score, mentioned_dates, message_text
from guard.settings import load_fact_sheets
from guard.mail.message import parse
from guard.paths import shipped
from guard.settings import Event

REPO = Path(__file__).resolve().parents[3]
SHIPPED = load_fact_sheets([shipped("events")])
#: one event a month (the 5th to the 20th, 2026), so a date in any month picks exactly one
MONTHLY = [Event(id=f"k{m:02d}", name=f"Month meeting {m}", start=dt.date(2026, m, 5), end=dt.date(2026, m, 20))
           for m in range(1, 13)]


def _id(event):
    return event.id if event is not None else None


def _parse(path: Path):
    return parse(path.read_bytes())


# -- real messages ---------------------------------------------------------------------------

SAMPLES = {
    "automated-bounce-domain-not-found.eml": None,
    "automated-out-of-office-exchange.eml": "mfml-2026",
    "inquiry-acceptance-pending.eml": "mfml-2026",
    "inquiry-hotel-payment.eml": "mfml-2026",
    "inquiry-invitation-letter.eml": "mfml-2026",
    "other-programme-change.eml": None,
    "report-conference-committee-gmail.eml": "mfml-2026",
    "report-royal-visit-attached.eml": None,
    "scam-attendee-list-offer.eml": "mfml-2026",
    "scam-conference-committee-card.eml": None,
    "scam-spoofed-crm-housing-iban.eml": None,
    "scam-travellerpoint-room-block.eml": None,
}

#: a few of the project's own examples per language, with and without an event
CORPUS = {
    "train/automated/020-list-seminari-geometria-ub.eml": None,  # ca
    "train/report/019-crm-spoof-allotjament-ub.eml": None,  # ca
    "train/scam/039-crrn-allotjament-ca.eml": "mfml-2026",  # ca
    "holdout/other/001-xifres-catering-setmana.eml": "mfml-2026",  # ca
    "train/automated/016-ooo-exchange-trilingual-iec.eml": "milan-workshop-2026",  # ca
    "train/report/008-royal-visit-tum.eml": None,  # de
    "train/other/017-titel-vortrag-nachgereicht.eml": None,  # de
    "holdout/automated/008-ooo-exchange-german-muenster.eml": "mfml-2026",  # de
    "holdout/inquiry/003-status-anmeldung.eml": "mfml-2026",  # de
    "train/report/038-passport-group-heidelberg.eml": "milan-workshop-2026",  # de
    "train/automated/040-sys-calendar-reminder-colloquium.eml": None,  # en
    "train/report/037-passport-group-booking-sent-tashkent.eml": None,  # en
    "holdout/scam/003-banff-committee-gmail-dates.eml": "birs-25w5430",  # en
    "train/scam/099-birs-banff-hotel-block.eml": "birs-25w5430",  # en
    "train/scam/071-events-housing-bureau-room-block.eml": "mfml-2026",  # en
    "train/report/061-long-overview-five-scams-kcl.eml": "mfml-2026",  # en
    "train/scam/015-milan-venue-invoice-new-account.eml": "milan-workshop-2026",  # en
    "train/automated/028-newsletter-airline-spring-sale.eml": "milan-workshop-2026",  # en
    "train/scam/083-pde-ml-workshop-housing-june.eml": "pde-ml-2024",  # en
    "train/scam/048-pde-ml-workshop-rate-expiry.eml": "pde-ml-2024",  # en
    "train/automated/044-sys-bank-corporate-card-alert.eml": None,  # es
    "train/report/056-badge-fee-attached-murcia.eml": None,  # es
    "train/automated/023-list-society-boletin-semanal.eml": "birs-25w5430",  # es
    "train/automated/029-newsletter-tren-ofertas-primavera.eml": "birs-25w5430",  # es
    "train/scam/077-travellerpoint-reserva-participante.eml": "mfml-2026",  # es
    "holdout/inquiry/019-certificado-asistencia-firmado.eml": "mfml-2026",  # es
    "train/scam/032-minisimposio-ultimas-habitaciones.eml": "pde-ip-ml-minisymposium-2026",  # es
    "train/scam/076-minisimposio-cuota-ponente.eml": "pde-ip-ml-minisymposium-2026",  # es
    "train/other/044-absence-info-pas-de-reponse.eml": None,  # fr
    "holdout/report/002-conf-committee-fee-rennes.eml": None,  # fr
    "train/report/022-genuine-acceptance-ens-lyon.eml": "mfml-2026",  # fr
    "holdout/inquiry/013-lettre-invitation-visa-senegal.eml": "mfml-2026",  # fr
    "train/inquiry/034-partita-iva-crm.eml": None,  # it
    "train/report/025-genuine-programme-dinner-pisa.eml": None,  # it
    "train/report/006-gte-whatsapp-milano.eml": "mfml-2026",  # it
    "holdout/scam/013-milano-bonifico-conferma.eml": "milan-workshop-2026",  # it
    "holdout/scam/004-milano-alloggio-relatori.eml": "milan-workshop-2026",  # it
    "train/scam/069-lisboa-alojamento-conferencia.eml": None,  # pt
    "holdout/inquiry/020-certificado-de-participacao.eml": None,  # pt
}


@pytest.mark.parametrize("name,expected", sorted(SAMPLES.items()))
def test_samples(name, expected):
    assert _id(detect_event(SHIPPED, _parse(REPO / "guard" / "samples" / name))) == expected


@pytest.mark.parametrize("path,expected", sorted(CORPUS.items()))
def test_corpus_examples(path, expected):
    assert _id(detect_event(SHIPPED, _parse(REPO / "models" / "corpus" / path))) == expected


def test_detection_agrees_with_the_public_scores():
    """detect_event is the strict best of event_score over mentioned_dates (no tie, above zero)."""
    files = sorted((REPO / "guard" / "samples").glob("*.eml")) + [REPO / "models" / "corpus" / p for p in CORPUS]
    for f in files:
        text = message_text(_parse(f))
        dates = mentioned_dates(text)
        scores = [event_score(e, text, dates) for e in SHIPPED]
        best = max(scores)
        want = SHIPPED[scores.index(best)] if best > 0 and scores.count(best) == 1 else None
        assert detect_event(SHIPPED, text=text) == want, f.name


# -- dates in every language and format ------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("7 January 2026", [(2026, 1, 7)]),
    ("January 7, 2026", [(2026, 1, 7)]),
    ("Jan. 7th", [(None, 1, 7)]),
    ("7th of January, 2026", [(2026, 1, 7)]),
    ("on the 22nd of Sept 2025", [(2025, 9, 22)]),
    ("7 de enero de 2026", [(2026, 1, 7)]),
    ("el 22 de setiembre", [(None, 9, 22)]),
    ("1º de mayo del 2026", [(2026, 5, 1)]),
    ("8 de gener de 2026", [(2026, 1, 8)]),
    ("4 d'agost", [(None, 8, 4)]),
    ("l'11 d'octubre de 2025", [(2025, 10, 11)]),
    ("del 29 de juny al 4 de juliol de 2025", [(None, 6, 29), (2025, 7, 4)]),
    ("le 7 janvier 2026", [(2026, 1, 7)]),
    ("le 1er février", [(None, 2, 1)]),
    ("15 août 2025", [(2025, 8, 15)]),
    ("le 3 mars", [(None, 3, 3)]),
    ("il 7 gennaio 2026", [(2026, 1, 7)]),
    ("15 giugno", [(None, 6, 15)]),
    ("dal 3 al 5 luglio 2025", [(2025, 7, 5)]),
    ("am 15 Juni", [(None, 6, 15)]),
    ("3 Dezember 2025", [(2025, 12, 3)]),
    ("2026-01-07", [(2026, 1, 7)]),
    ("2026-1-7", [(2026, 1, 7)]),
    ("07/01/2026", [(2026, 1, 7), (2026, 7, 1)]),  # day first, then month first
    ("7.1.2026", [(2026, 1, 7), (2026, 7, 1)]),
    ("13/01/2026", [(2026, 1, 13)]),
    ("01/13/2026", [(2026, 1, 13)]),
    ("31/02/2026", [(2026, 2, 31)]),  # not a real day: _in_event drops it
    ("Invalid: 29 February 2025", [(2025, 2, 29)]),
    ("32 January", []),
    ("0 March 2026", []),
    ("20261-01-07", []),
    ("1/07/01/2026", []),
    ("MARCH 3 2026", [(2026, 3, 3)]),
    ("May 2026", []),
    ("mar 3", [(None, 3, 3)]),
    ("3 mar", [(None, 3, 3)]),
    ("June 29th, 2025 - July 4th, 2025", [(2025, 6, 29), (2025, 7, 4)]),
    # German: a dot after the day, and März (folded "marz"); Portuguese month names
    ("7. Januar 2026", [(2026, 1, 7)]),
    ("10. März 2026", [(2026, 3, 10)]),
    ("12 März", [(None, 3, 12)]),
    ("7 de janeiro de 2026", [(2026, 1, 7)]),
    ("3 de março", [(None, 3, 3)]),
    ("20 de dezembro de 2026", [(2026, 12, 20)]),
])
def test_mentioned_dates(text, expected):
    assert mentioned_dates(text) == expected


MONTH_WORDS = {
    "en": "January February March April May June July August September October November December",
    "en-short": "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "ca": "gener febrer març abril maig juny juliol agost setembre octubre novembre desembre",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre",
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
}
FORMS = ["{d} {M}", "{d} {M} 2026", "{M} {d}", "{M} {d}, 2026", "{M}. {d}th", "{d}th of {M}", "{d} de {M} de 2026",
         "{d} de {M} del 2026", "le {d}er {M}", "{d} {M}.", "{d} {M_upper} 2026", "{d}. {M} 2026"]


@pytest.mark.parametrize("lang", sorted(MONTH_WORDS))
def test_every_month_in_every_language_and_form(lang):
    for month, name in enumerate(MONTH_WORDS[lang].split(), 1):
        for form in FORMS:
            text = form.format(d=14, M=name, M_upper=name.upper())
            want = f"k{month:02d}"
            assert _id(detect_event(MONTHLY, text=text)) == want, text


@pytest.mark.parametrize("month", range(1, 13))
def test_numeric_dates_every_month(month):
    for text in (f"2026-{month:02d}-14", f"2026-{month}-14", f"14/{month:02d}/2026", f"14.{month}.2026",
                 f"{month:02d}/14/2026"):
        assert _id(detect_event(MONTHLY, text=text)) == f"k{month:02d}", text
    # 07/06/2026 is the 7th of June or the 6th of July: both fit an event, so no event
    if 5 <= month <= 11:
        assert detect_event(MONTHLY, text=f"{month + 1:02d}/{month:02d}/2026") is None


def test_names_dates_and_ties():
    assert _id(detect_event(SHIPPED, text="mfml2026, 2026-01-08")) == "mfml-2026"
    assert _id(detect_event(MONTHLY, text="Month meeting 3 on 14 May")) == "k03"  # a name beats a date
    assert _id(detect_event(MONTHLY, text="14 March or 14 May")) is None
    assert _id(detect_event(MONTHLY, text="see k03")) == "k03"  # the id counts as an alias
    short = [Event(id="short-1", name="Short names", aliases=["AB"])]
    assert detect_event(short, text="AB") is None  # a name under 3 letters never matches
    assert _id(detect_event(MONTHLY, text="xmonth meeting 3")) is None  # whole words only
    assert _id(detect_event(MONTHLY, text="MONTH   MEETING\n3")) == "k03"  # folded: case and spaces
    assert detect_event(MONTHLY, text="") is None and detect_event(MONTHLY) is None

