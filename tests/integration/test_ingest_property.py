"""Generated hostile CSV and JSONL files, on SQLite and on PostgreSQL: no exception escapes,
every row is stored or rejected (never both, never neither), and what is stored is the row's
text less its control characters (issue #11)."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import Store, ingest_file

pytestmark = pytest.mark.integration

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
HOSTILE_CHARS = st.sampled_from(
    [
        *("\x00", "\x1b", "\x85", "\x7f", "\t", "\r", "\n", "\u2028", "\u2029", "\ufeff"),
        *('"', ",", "\\", "{", " ", "é", "\U0001f600", "\ud800", "\udcff"),
    ]
)
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE_CHARS, st.text(max_size=5)), max_size=12).map("".join)
IDS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(min_size=0, max_size=6),
    st.sampled_from(["x" * 256, "x" * 255, " ", "a\x00b", "dup"]),
)
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (
        f"sqlite:///{tmp_path / 'store.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    store = Store(url)
    store.init()
    yield store
    store.dispose()


def _encode(text: str) -> bytes:
    # lone surrogates become invalid UTF-8 bytes: what a broken exporter writes
    return text.encode("utf-8", errors="surrogatepass")


def _expected(rows: list[tuple[str, str]]) -> dict[str, str]:
    """What a correct ingest stores: per valid id the last valid row's cleaned text."""
    out: dict[str, str] = {}
    for raw_id, text in rows:
        source_id = raw_id.strip()
        if (
            not source_id
            or len(source_id) > 255
            or _CONTROL.search(source_id)
            or re.search("[\ud800-\udfff]", raw_id + text)
        ):
            continue
        cleaned = _CONTROL.sub("", text)
        if cleaned.strip():
            out[source_id] = cleaned
    return out


def _check(store: Store, path: Path, rows: int, expected: dict[str, str] | None) -> None:
    report = ingest_file(store, path)  # no exception may escape
    assert report.rows == rows
    assert report.stored + report.n_rejected == rows
    assert len({r for r, _ in report.rejected}) == report.n_rejected  # one reason per row
    if expected is not None:
        ids = store.chat_ids_by_source(list(expected))
        stored = store.chats_by_id(list(ids.values()))
        assert {c.source_id: c.text for c in stored.values()} == expected


@SETTINGS
@given(rows=st.lists(st.tuples(IDS, HOSTILE_TEXT), min_size=1, max_size=25))
def test_hostile_csv(store: Store, tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    prefix = uuid.uuid4().hex[:8]  # each example writes ids of its own
    rows = [(prefix + i if i.strip() else i, t) for i, t in rows]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["chat_id", "text"])
    writer.writerows(rows)
    path = tmp_path_factory.mktemp("csv") / "hostile.csv"
    path.write_bytes(_encode(buf.getvalue()))
    # a NUL, CR or quote inside a field is quoted by the writer, so each row is one record
    _check(store, path, len(rows), _expected(rows))


@SETTINGS
@given(
    rows=st.lists(
        st.one_of(
            st.tuples(IDS, HOSTILE_TEXT),
            st.sampled_from(["{", "[1]", '"text"', '{"chat_id": 1}', "NaN", "\x00", "{}"]),
        ),
        min_size=1,
        max_size=25,
    ),
    ascii_only=st.booleans(),
)
def test_hostile_jsonl(
    store: Store, tmp_path_factory: pytest.TempPathFactory, rows: list, ascii_only: bool
) -> None:
    prefix = uuid.uuid4().hex[:8]
    lines, valid = [], []
    for row in rows:
        if isinstance(row, tuple):
            raw_id = prefix + row[0] if row[0].strip() else row[0]
            valid.append((raw_id, row[1]))
            lines.append(json.dumps({"chat_id": raw_id, "text": row[1]}, ensure_ascii=ascii_only))
        else:
            lines.append(row)
    path = tmp_path_factory.mktemp("jsonl") / "hostile.jsonl"
    path.write_bytes(_encode("\n".join(lines) + "\n"))
    _check(store, path, len(lines), _expected(valid))


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_arbitrary_bytes_after_a_valid_header(
    store: Store, tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str
) -> None:
    """Garbage of any shape: the counts still add up and nothing escapes."""
    path = tmp_path_factory.mktemp("bytes") / f"garbage{suffix}"
    path.write_bytes((b"chat_id,text\n" if suffix == ".csv" else b"") + data)
    report = ingest_file(store, path)
    assert report.stored + report.n_rejected == report.rows
