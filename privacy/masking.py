"""Personal data in chat text replaced by typed placeholders (``<EMAIL>``, ``<PHONE>`` ...).

The recognisers are Presidio's pattern recognisers (e-mail, phone numbers through
``phonenumbers``, Luhn-checked payment cards, IBANs with their checksum, IP addresses), run
without an NLP pipeline, so nothing is downloaded; ours add what Presidio has none of: URLs
that carry a query string, street addresses, and the shop's own reference patterns (order,
booking, tracking ids). Names are not found: that needs a named-entity model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from privacy.errors import PatternError

#: Regions whose national phone formats are recognised (international ones always are).
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "BR", "CA", "JP")
#: Presidio's entity names and ours, to the placeholder annotators see.
PLACEHOLDERS = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "URL": "URL",
    "STREET_ADDRESS": "ADDRESS",
}
_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,39}")


@dataclass(frozen=True, slots=True)
class Span:
    """Where a piece of personal data is, and its placeholder name (``EMAIL``, ``ORDER_ID``)."""

    start: int
    end: int
    kind: str


class Masker:
    """Finds and replaces personal data; build once, call from many threads.

    ``patterns`` maps a placeholder name (``ORDER_ID``) to a regular expression for the shop's
    own references; ``phone_regions`` are the countries whose national formats count.
    """

    def __init__(
        self,
        patterns: Mapping[str, str] | None = None,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    ) -> None:
        self.patterns = dict(patterns or {})
        for name, regex in self.patterns.items():
            if not _NAME.fullmatch(name):
                raise PatternError(f"pattern name {name!r}: use A-Z, 0-9 and _ (e.g. ORDER_ID)")
            try:
                re.compile(regex)
            except re.error as exc:
                raise PatternError(f"pattern {name}: not a regular expression: {exc}") from None
        self.phone_regions = tuple(phone_regions)

    @cached_property
    def _recognizers(self) -> list[Any]:
        # imported here: Presidio pulls in spaCy, about a second that only masking needs
        from presidio_analyzer.predefined_recognizers import IbanRecognizer

        from privacy import recognizers as ours

        own = {"URL": ours.URL_WITH_QUERY, "STREET_ADDRESS": ours.STREET_ADDRESS, **self.patterns}
        return [
            ours.OfflineEmailRecognizer(),
            ours.ChatPhoneRecognizer(supported_regions=self.phone_regions),
            ours.ChatCardRecognizer(),
            IbanRecognizer(),
            ours.ChatIpRecognizer(),
            *(ours.pattern_recognizer(name, regex) for name, regex in own.items()),
        ]

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans, in text order. Where two overlap, the surer one wins (a
        configured reference or a checksum-valid card over a number that also parses as a
        phone number), then the longer."""
        found: list[tuple[int, int, float, str]] = []
        for recognizer in self._recognizers:
            for hit in recognizer.analyze(text, recognizer.supported_entities, None):
                kind = PLACEHOLDERS.get(hit.entity_type, hit.entity_type)
                found.append((hit.start, hit.end, hit.score, kind))
        found.sort(key=lambda f: (-f[2], -(f[1] - f[0]), f[0]))
        taken: list[Span] = []
        for start, end, _, kind in found:
            if all(end <= s.start or start >= s.end for s in taken):
                taken.append(Span(start, end, kind))
        return sorted(taken, key=lambda s: s.start)

    def mask(self, text: str) -> str:
        """``text`` with each piece of personal data replaced by ``<KIND>``."""
        spans = self.find(text) if text else []
        if not spans:
            return text
        parts, last = [], 0
        for span in spans:
            parts += [text[last : span.start], f"<{span.kind}>"]
            last = span.end
        parts.append(text[last:])
        return "".join(parts)
