"""Masking of personal data in chat text (issue #15): what each recogniser finds, what it must
leave alone, and the placeholders annotators see."""

from __future__ import annotations

import pytest

from privacy import Masker, PatternError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker({"ORDER_ID": r"\bORD-\d{6}\b", "BOOKING_REF": r"(?-i:\b[A-Z]{2}\d{4}[A-Z]\b)"})


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to anna.berg+shop@example.co.uk please", "write to <EMAIL> please"),
        ("call me on +44 20 7946 0958", "call me on <PHONE>"),
        ("my number is (415) 555-2671.", "my number is <PHONE>."),
        ("ruf an: +49 30 12345678", "ruf an: <PHONE>"),
        ("card 4111 1111 1111 1111 was charged twice", "card <CARD> was charged twice"),
        ("card 4111-1111-1111-1111", "card <CARD>"),
        ("card 2221 0000 0000 0009 (the 2-series)", "card <CARD> (the 2-series)"),
        ("our ft 1261 5127-4950-4974-4856 to LGA", "our ft 1261 <CARD> to LGA"),
        ("IBAN DE89 3704 0044 0532 0130 00 for the refund", "IBAN <IBAN> for the refund"),
        ("from 203.0.113.7 again", "from <IP> again"),
        ("see https://shop.example.com/o?id=42&t=x now", "see <URL> now"),
        ("order ORD-123456 never came", "order <ORDER_ID> never came"),
        ("booking AB1234C was cancelled", "booking <BOOKING_REF> was cancelled"),
        ("deliver to 221 Baker Street tomorrow", "deliver to <ADDRESS> tomorrow"),
        (
            "mail a@b.com or call +1 212 555 0123",
            "mail <EMAIL> or call <PHONE>",
        ),
    ],
)
def test_personal_data_becomes_a_typed_placeholder(masker: Masker, text: str, masked: str) -> None:
    assert masker.mask(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "flight 1640 was three hours late",  # a flight number is no phone number
        "it left on 02.27.2015 at noon",  # nor is a date
        "card 4111 1111 1111 1112 declined",  # fails the Luhn check: not a card
        "my bag is lost :: again",  # no IPv6 address
        "see https://example.com/help for more",  # a URL without a query string stays
        "we had to walk 39 each way",  # lower case: no street
        "order ord-12345 is short by one digit",
        "@united thanks, great crew on UA 1234!",
        "",
    ],
)
def test_ordinary_chat_text_is_left_alone(masker: Masker, text: str) -> None:
    assert masker.mask(text) == text


def test_a_card_number_is_not_also_taken_for_a_phone_number(masker: Masker) -> None:
    spans = masker.find("pay with 5555 5555 5555 4444 today")
    assert [s.kind for s in spans] == ["CARD"]


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ({"order id": r"\d+"}, "pattern name 'order id'"),
        ({"ORDER_ID": r"(\d+"}, "pattern ORDER_ID: not a regular expression"),
    ],
)
def test_a_bad_pattern_is_named(patterns: dict[str, str], message: str) -> None:
    with pytest.raises(PatternError, match=message):
        Masker(patterns)


def test_timestamps_are_not_phone_numbers_but_a_number_beside_one_is() -> None:
    masker = Masker()
    for stamp in ("2015-02-24 11:35:52 -0800", "2026-11-29T21:30:00Z", "2026-11-29"):
        assert masker.mask(stamp) == stamp
    said = masker.mask("on 2015-02-24 11:35:52 -0800 call +44 20 7946 0958 or 0612345678")
    assert said == "on 2015-02-24 11:35:52 -0800 call <PHONE> or <PHONE>"
