"""A planted-PII corpus: airline chats with synthetic personal data inserted at random places.

Every planted value is valid of its kind (phone numbers that ``phonenumbers`` accepts for their
country, Luhn-valid card numbers, IBANs with a correct checksum), written the ways customers
write them, so recall measures the recognisers and not the generator. The values are made up:
nothing here is anyone's data.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

#: The shop's own reference format, as a user would configure it (SENTILOOP_PII_PATTERNS).
ORDER_PATTERN = {"ORDER_ID": r"\bORD-\d{6}\b"}
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "BR", "CA", "JP")
KINDS = ("EMAIL", "PHONE", "CARD", "ORDER_ID", "IBAN", "IP", "URL", "ADDRESS")
_FIRST = ("anna", "li", "mohamed", "sofia", "james", "priya", "lucas", "emma", "kenji", "olga")
_LAST = ("berg", "wang", "haddad", "rossi", "smith", "patel", "silva", "martin", "sato", "ivanova")
_DOMAINS = ("example.com", "mail.co.uk", "web.de", "correo.es", "posta.it", "shop.com.br", "a.org")
_STREETS = ("Baker", "Maple", "Oak Hill", "Church", "Station", "Victoria", "Elm", "Sunset")
_SUFFIXES = ("Street", "St", "Avenue", "Ave", "Road", "Rd", "Lane", "Drive", "Boulevard")
_LEADS = {
    "EMAIL": ("my email is", "write to", "contact me at", ""),
    "PHONE": ("call me on", "my number is", "reach me at", ""),
    "CARD": ("charged my card", "card number", "paid with", ""),
    "ORDER_ID": ("order", "my order", "ref", ""),
    "IBAN": ("refund to IBAN", "my account", ""),
    "IP": ("from IP", "login from", ""),
    "URL": ("see", "link:", ""),
    "ADDRESS": ("deliver to", "I live at", "ship it to", ""),
}


@dataclass(frozen=True)
class Planted:
    """One planted value and where it is in the chat's new text."""

    kind: str
    value: str
    start: int
    end: int


def _email(rng: random.Random) -> str:
    sep = rng.choice([".", "_", "", "+"])
    user = rng.choice(_FIRST) + sep + rng.choice(_LAST) + rng.choice(["", str(rng.randint(1, 99))])
    return f"{user}@{rng.choice(_DOMAINS)}"


def _phone(rng: random.Random) -> str:
    region = rng.choice(PHONE_REGIONS)
    kind = rng.choice([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    national, number = str(example.national_number), example
    for _ in range(100):  # vary the subscriber digits while the number stays valid
        digits = national[:-4] + "".join(rng.choice(string.digits) for _ in range(4))
        candidate = phonenumbers.PhoneNumber(
            country_code=example.country_code,
            national_number=int(digits),
            italian_leading_zero=example.italian_leading_zero,  # Italy's fixed lines keep a 0
        )
        if phonenumbers.is_valid_number(candidate):
            number = candidate
            break
    style = rng.choice(
        [PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL, PhoneNumberFormat.E164]
    )
    return phonenumbers.format_number(number, style)


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str((10 - total % 10) % 10)


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15)])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + _luhn_digit(body)
    sep = rng.choice(["", " ", "-"])
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return sep.join(groups) if sep else number


def _iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14)])
    if country in ("GB", "NL"):
        bank = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
        bban = bank + "".join(rng.choice(string.digits) for _ in range(length - 4))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(length))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    iban = f"{country}{check:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban


def _value(kind: str, rng: random.Random) -> str:
    if kind == "EMAIL":
        return _email(rng)
    if kind == "PHONE":
        return _phone(rng)
    if kind == "CARD":
        return _card(rng)
    if kind == "ORDER_ID":
        return f"ORD-{rng.randint(0, 999_999):06d}"
    if kind == "IBAN":
        return _iban(rng)
    if kind == "IP":
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == "URL":
        return (
            f"https://shop.example.com/orders?id={rng.randint(1000, 99999)}&s={rng.randint(1, 9)}"
        )
    street = f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} {rng.choice(_SUFFIXES)}"
    return street


def plant(text: str, kinds: list[str], rng: random.Random) -> tuple[str, list[Planted]]:
    """``text`` with one value of each of ``kinds`` inserted between words at random, two
    values never side by side (at least one of the chat's words between them)."""
    words = text.split(" ")
    slots = sorted(rng.sample(range(len(words) + 1), min(len(kinds), len(words) + 1)))
    pieces: list[tuple[str, str, str]] = [("", "", w) for w in words]  # kind, lead, word
    for slot, kind in sorted(zip(slots, kinds, strict=False), reverse=True):
        pieces.insert(slot, (kind, rng.choice(_LEADS[kind]), _value(kind, rng)))
    out, planted, offset = [], [], 0
    for kind, lead, word in pieces:
        piece = f"{lead} {word}".strip()
        if kind:
            start = offset + len(piece) - len(word)
            planted.append(Planted(kind, word, start, start + len(word)))
        out.append(piece)
        offset += len(piece) + 1
    return " ".join(out), planted


def corpus(texts: list[str], seed: int = 0) -> list[tuple[str, list[Planted]]]:
    """Each text with one to three planted values; every kind is planted about equally often."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        kinds = rng.sample(KINDS, rng.randint(1, 3))
        out.append(plant(text, kinds, rng))
    return out
