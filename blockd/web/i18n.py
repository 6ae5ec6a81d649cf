"""Language choice for notice pages, and the wording of the pages that are not notices.

The legal notice itself lives in ``policies/notices/<template>.<lang>.html`` so lawyers can
edit it; the short system pages (no longer blocked, unknown host, the list of orders)
share these strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LANGUAGES = ("en", "da", "de", "it")

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "lifted_title": "This site is no longer blocked",
        "lifted_body": "The order that blocked this site is no longer in force. Your "
                       "device may still remember the old address for a short while; "
                       "please try again in a few moments.",
        "unknown_title": "Nothing is blocked here",
        "unknown_body": "This is the blocking notice server of your internet provider. "
                        "No block applies to the address you asked for.",
        "orders_title": "Blocking orders in force",
        "orders_intro": "Your internet provider blocks the following sites because a court "
                        "or regulator ordered it to.",
        "reference": "Reference", "authority": "Authority", "issued": "Issued",
        "targets": "Blocked", "none": "No orders are in force.",
        "retry": "Try again",
    },
    "da": {
        "lifted_title": "Siden er ikke længere blokeret",
        "lifted_body": "Kendelsen, der blokerede siden, er ikke længere i kraft. Din enhed "
                       "kan huske den gamle adresse et øjeblik endnu; prøv igen om lidt.",
        "unknown_title": "Intet er blokeret her",
        "unknown_body": "Dette er din internetudbyders server til blokeringsmeddelelser. "
                        "Der er ingen blokering af den adresse, du bad om.",
        "orders_title": "Gældende blokeringskendelser",
        "orders_intro": "Din internetudbyder blokerer følgende sider, fordi en domstol "
                        "eller myndighed har pålagt det.",
        "reference": "Sagsnummer", "authority": "Myndighed", "issued": "Afsagt",
        "targets": "Blokeret", "none": "Ingen kendelser er i kraft.",
        "retry": "Prøv igen",
    },
    "de": {
        "lifted_title": "Diese Seite ist nicht mehr gesperrt",
        "lifted_body": "Die Anordnung, die diese Seite gesperrt hat, gilt nicht mehr. Ihr "
                       "Gerät kennt eventuell noch kurz die alte Adresse; bitte versuchen "
                       "Sie es gleich noch einmal.",
        "unknown_title": "Hier ist nichts gesperrt",
        "unknown_body": "Dies ist der Sperrhinweis-Server Ihres Internetanbieters. Für die "
                        "angefragte Adresse besteht keine Sperre.",
        "orders_title": "Geltende Sperranordnungen",
        "orders_intro": "Ihr Internetanbieter sperrt die folgenden Seiten auf Anordnung "
                        "eines Gerichts oder einer Behörde.",
        "reference": "Aktenzeichen", "authority": "Behörde / Gericht", "issued": "Erlassen",
        "targets": "Gesperrt", "none": "Es gelten keine Anordnungen.",
        "retry": "Erneut versuchen",
    },
    "it": {
        "lifted_title": "Questo sito non è più bloccato",
        "lifted_body": "L'ordine che bloccava questo sito non è più in vigore. Il tuo "
                       "dispositivo potrebbe ricordare ancora per poco il vecchio indirizzo; "
                       "riprova tra qualche istante.",
        "unknown_title": "Qui non c'è nulla di bloccato",
        "unknown_body": "Questo è il server degli avvisi di blocco del tuo fornitore di "
                        "accesso. Nessun blocco riguarda l'indirizzo richiesto.",
        "orders_title": "Ordini di blocco in vigore",
        "orders_intro": "Il tuo fornitore di accesso blocca i seguenti siti su ordine di "
                        "un tribunale o di un'autorità.",
        "reference": "Riferimento", "authority": "Autorità", "issued": "Emesso",
        "targets": "Bloccato", "none": "Nessun ordine in vigore.",
        "retry": "Riprova",
    },
}

_TAG = re.compile(r"^[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*$")


def accepted(header: str | None) -> list[str]:
    """Primary language subtags from Accept-Language, best first (q=0 excluded)."""
    if not header:
        return []
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        item = part.strip()
        if not item:
            continue
        tag, _, params = item.partition(";")
        tag = tag.strip()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0 or not (tag == "*" or _TAG.match(tag)):
            continue
        weighted.append((-q, index, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(weighted)]


def choose(offered: Sequence[str], header: str | None, override: str | None) -> str:
    """``?lang=`` if offered, else the best Accept-Language match, else the first offer."""
    if override and override in offered:
        return override
    for tag in accepted(header):
        if tag == "*":
            return offered[0]
        if tag in offered:
            return tag
    return offered[0]
