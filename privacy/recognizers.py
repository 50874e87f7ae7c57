"""Presidio's recognisers where they need a fix for chat text, and the ones we add.

* E-mail: Presidio checks an address's public suffix with ``tldextract``, whose default fetches
  the suffix list from the internet on first use; the list bundled with tldextract suffices.
* Phone numbers: some national plans (Germany, Italy) accept very short numbers, so "flight
  1640" or a date like "02.27.2015" would count; we want at least 7 digits and no date.
* IP addresses: "::" in a message is an emoticon more often than IPv6's unspecified address.
* Ours: URLs that carry a query string (they often hold an order or session id), street
  addresses, the shop's own reference patterns. Presidio's regexes ignore case; the address
  pattern needs capitals, so it turns that off for itself.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import phonenumbers
import tldextract
from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IpRecognizer,
    PhoneRecognizer,
)

MIN_PHONE_DIGITS = 7
_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")
#: A whole value that is a date and time ("2015-02-24 11:35:52 -0800", ISO 8601).
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?"
    r"(?:\s?(?:Z|UTC|[+-]\d{2}:?\d{2}))?"
)
#: Digits, with the separators people write phone numbers with, and the words they form.
_DIGIT_RUN = re.compile(r"(?<![\w)+(])[+(]?\d[\d \t().\-/]{5,40}\d\b")
_WORD = re.compile(r"\S+")
_CARD_PATTERNS = [
    Pattern("card 2-series", r"\b2(?:2[2-9]|[3-6]\d|7[0-2])\d(?:[- ]?\d{4}){3}\b", 0.3),
    Pattern("card amex 4-6-5", r"\b3[47]\d{2}[- ]?\d{6}[- ]?\d{5}\b", 0.3),
    # each pattern searches on its own: where Presidio's loose one swallowed a number just
    # before the card ("flight 1261 5127-4950-..."), this one still finds the 16 digits
    Pattern("card 4x4", r"\b(?:4\d{3}|5[1-5]\d{2}|6\d{3})(?:[- ]?\d{4}){3}\b", 0.3),
]
URL_WITH_QUERY = r"\b(?:https?://|www\.)[^\s<>\"']+\?[^\s<>\"']+"
STREET_ADDRESS = (
    r"(?-i:\b\d{1,5}[A-Za-z]?\s+(?:[A-Z][a-z]+\.?\s+){1,3}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl"
    r"|Square|Sq|Terrace|Parkway|Pkwy|Highway|Hwy)\b\.?)"
)


@cache
def _suffixes() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


class OfflineEmailRecognizer(EmailRecognizer):
    def validate_result(self, pattern_text: str) -> bool:
        return _suffixes()(pattern_text).fqdn != ""


class ChatPhoneRecognizer(PhoneRecognizer):
    """``phonenumbers``' matcher, plus a second look at digit runs it gave up on: it takes the
    longest run, so a number followed by another ("call +33 1 23 45 54 48 20 minutes ago")
    fails as a whole; we try each window of the run's words and keep the longest valid one."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        if sum(c.isdigit() for c in text) < MIN_PHONE_DIGITS:
            return []  # most chats: nothing could be a phone number, skip the 12 regions' matching
        if _TIMESTAMP.fullmatch(text.strip()):
            return []  # a metadata column's timestamp: no phone number, and slow to rule out
        hits = [
            hit
            for hit in super().analyze(text, entities, nlp_artifacts)
            if _phone_like(text[hit.start : hit.end])
        ]
        for run in _DIGIT_RUN.finditer(text):
            if any(h.start <= run.start() and run.end() <= h.end for h in hits):
                continue
            window = self._longest_valid(text, run)
            if window is not None:
                hits.append(
                    RecognizerResult("PHONE_NUMBER", window[0], window[1], 0.4)  # as Presidio's
                )
        return hits

    def _longest_valid(self, text: str, run: re.Match[str]) -> tuple[int, int] | None:
        words = [(m.start() + run.start(), m.end() + run.start()) for m in _WORD.finditer(run[0])]
        windows = sorted(
            ((i, j) for i in range(len(words)) for j in range(i, min(len(words), i + 6))),
            key=lambda w: words[w[0]][0] - words[w[1]][1],
        )
        for i, j in windows:
            start, end = words[i][0], words[j][1]
            if _phone_like(text[start:end]) and any(
                _valid(text[start:end], region) for region in self.supported_regions
            ):
                return start, end
        return None


def _phone_like(candidate: str) -> bool:
    candidate = candidate.strip()
    return (
        sum(c.isdigit() for c in candidate) >= MIN_PHONE_DIGITS
        and not _DATE.fullmatch(candidate)
        and not _TIMESTAMP.match(candidate)  # "2015-02-24 11" of "2015-02-24 11:35:52"
    )


def _valid(candidate: str, region: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)))
    except phonenumbers.NumberParseException:
        return False


class ChatCardRecognizer(CreditCardRecognizer):
    """Presidio's patterns predate Mastercard's 2-series (2221-2720); ours add it, Amex's
    4-6-5 grouping and plain 16 digits. Every candidate still has to pass the Luhn check."""

    def __init__(self) -> None:
        super().__init__(patterns=[*CreditCardRecognizer.PATTERNS, *_CARD_PATTERNS])

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: Any = None,
        regex_flags: int | None = None,
    ) -> list[Any]:
        # "+5511961238509" is a Brazilian phone number, whatever its Luhn sum says
        hits = super().analyze(text, entities, nlp_artifacts, regex_flags)
        return [h for h in hits if not text[: h.start].endswith("+")]


class ChatIpRecognizer(IpRecognizer):
    def validate_result(self, pattern_text: str) -> bool | None:
        if not any(c.isalnum() for c in pattern_text):
            return False
        valid: bool | None = super().validate_result(pattern_text)
        return valid


def pattern_recognizer(entity: str, regex: str, score: float = 0.9) -> Any:
    """A recogniser for one of our own patterns (entity names are the placeholders)."""
    return PatternRecognizer(
        supported_entity=entity, patterns=[Pattern(entity.lower(), regex, score)]
    )
