"""Reading chat files (CSV or JSONL) as a stream: every good row is kept, every bad row gets
a reason, and memory does not grow with the file (only with its longest row).

What a row may hold (README, *Ingest rules*):

* control characters (C0 but tab, newline and carriage return; DEL; C1) are removed from
  texts and metadata strings: databases refuse some of them (PostgreSQL: NUL) and none of
  them carries meaning for a reader or the model. A text that is empty afterwards is rejected;
* a chat id with a control character, or longer than :data:`MAX_ID_CHARS`, is rejected (an
  id is a key: changing it could merge two chats);
* any field longer than :data:`MAX_FIELD_CHARS` rejects its row;
* text that is not valid UTF-8, or a JSON string holding an unpaired surrogate escape
  (``"\\ud800"``), rejects its row: it cannot be stored as Unicode text.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from store.errors import IngestError

ID_COLUMNS = ("chat_id", "id")
TEXT_COLUMNS = ("text",)
TIME_COLUMNS = ("received_at", "created_at", "timestamp")
SUFFIXES = (".csv", ".jsonl", ".ndjson")
#: Longer texts are stored whole; the model only ever sees its first ``max_length`` tokens.
LONG_TEXT_CHARS = 5000
#: The chat id column's size in the store.
MAX_ID_CHARS = 255
#: A field (text or metadata value) longer than this rejects its row.
MAX_FIELD_CHARS = 1_000_000
#: A physical line longer than this is skipped unread (JSONL) or rejected (CSV field):
#: it bounds the memory one row can take.
MAX_LINE_BYTES = 64 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of invalid UTF-8

# the csv module refuses fields over 128 KiB by default; ours are bounded by MAX_FIELD_CHARS
# (checked per row) and, for memory, by the line length
csv.field_size_limit(MAX_LINE_BYTES)


@dataclass(frozen=True)
class ChatIn:
    """A validated input row; ``row`` is its record number in the file (0: not from a file)."""

    source_id: str
    text: str
    meta: dict[str, Any]
    received_at: datetime | None
    row: int = 0
    cleaned: bool = False  # control characters were removed


@dataclass(frozen=True)
class RowError:
    """A rejected row: its 1-based record number in the file and why (never its content)."""

    row: int
    reason: str


@dataclass
class ParseResult:
    chats: list[ChatIn] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    long_texts: int = 0


def parse_file(path: Path) -> ParseResult:
    """Every record of a small file at once (evaluation files); ingest streams instead."""
    result = ParseResult()
    for record in iter_file(path):
        if isinstance(record, RowError):
            result.errors.append(record)
        else:
            result.long_texts += len(record.text) > LONG_TEXT_CHARS
            result.chats.append(record)
    return result


def iter_file(path: Path) -> Iterator[ChatIn | RowError]:
    """Validated records of a CSV (``.csv``) or JSON Lines (``.jsonl``/``.ndjson``) file, in
    file order, one row in memory at a time. A file that cannot be read at all (missing,
    unknown type, no id or text column) raises :class:`IngestError` before the first record."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise IngestError(f"{path.name}: unsupported file type {suffix!r}; use .csv or .jsonl")
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise IngestError(f"input file not found: {path}") from None
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot be read: {exc.strerror}") from None
    records = _csv_records(fh, path) if suffix == ".csv" else _jsonl_records(fh)
    return _validated(fh, records)


def _validated(
    fh: IO[bytes], records: Iterator[tuple[int, dict[str, Any] | RowError]]
) -> Iterator[ChatIn | RowError]:
    with fh:
        for row, record in records:
            yield record if isinstance(record, RowError) else validate_record(row, record)


def _lines(fh: IO[bytes]) -> Iterator[bytes | None]:
    """Physical lines split at ``\\n`` only (never inside a JSON string at U+2028 or a
    lone ``\\r``), each at most MAX_LINE_BYTES: a longer one is read past and given as None."""
    while True:
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while True:  # skip the rest of the line without holding it
                part = fh.readline(MAX_LINE_BYTES)
                if not part or part.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


def _decode(line: bytes) -> str:
    # surrogateescape keeps invalid bytes visible per field, so one bad row does not sink the file
    return line.decode("utf-8", errors="surrogateescape")


def _csv_records(fh: IO[bytes], path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    too_long = False

    def text_lines() -> Iterator[str]:
        nonlocal too_long
        for i, line in enumerate(_lines(fh)):
            if line is None:
                too_long = True
                yield "\n"  # an empty record in its place; reported below
            else:  # a UTF-8 byte order mark is not part of the header
                yield _decode(line[3:] if i == 0 and line.startswith(_BOM) else line)

    reader = csv.reader(text_lines())
    try:
        header = next(reader, None) or []
    except csv.Error as exc:
        raise IngestError(f"{path.name}: the header is not valid CSV: {exc}") from None
    if not any(c in header for c in ID_COLUMNS) or not any(c in header for c in TEXT_COLUMNS):
        raise IngestError(
            f"{path.name}: the header must name an id column ({' or '.join(ID_COLUMNS)}) "
            f"and a text column; found {[h[:40] for h in header[:20]]}"
        )
    number = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number += 1
            yield number, RowError(number, f"not valid CSV: {exc}")
            continue
        if too_long:
            too_long = False
            number += 1
            yield number, RowError(number, f"a line is longer than {MAX_LINE_BYTES:,} bytes")
            continue
        if not values:  # a blank line is no record
            continue
        number += 1
        if len(values) != len(header):
            yield (
                number,
                RowError(number, f"{len(values)} fields, header has {len(header)}"),
            )
            continue
        yield number, dict(zip(header, values, strict=True))


def _jsonl_records(fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    number = 0
    for raw in _lines(fh):
        if raw is None:
            number += 1
            yield number, RowError(number, f"the line is longer than {MAX_LINE_BYTES:,} bytes")
            continue
        if number == 0 and raw.startswith(_BOM):
            raw = raw[3:]
        line = _decode(raw)
        if not line.strip():
            continue
        number += 1
        if _BAD_BYTE.search(line):
            yield number, RowError(number, "not valid UTF-8")
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            yield number, RowError(number, f"not valid JSON: {exc.msg}")
            continue
        except (ValueError, RecursionError) as exc:  # NaN, a 5,000-digit number, deep nesting
            msg = str(exc).split(":")[0] if isinstance(exc, ValueError) else "nested too deeply"
            yield number, RowError(number, f"not valid JSON: {msg}")
            continue
        if not isinstance(obj, dict):
            yield number, RowError(number, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield number, obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _problem(value: Any, depth: int = 0) -> str | None:
    """Why a value cannot be stored as text, or None."""
    if isinstance(value, str):
        if _BAD_BYTE.search(value):
            return "is not valid UTF-8"
        if _SURROGATE.search(value):
            return "is not valid Unicode (an unpaired surrogate escape)"
        if len(value) > MAX_FIELD_CHARS:
            return f"is {len(value):,} characters long; the limit is {MAX_FIELD_CHARS:,}"
        return None
    if depth > 20:
        return "is nested too deeply"
    if isinstance(value, dict):
        items = list(value.keys()) + list(value.values())
    elif isinstance(value, list):
        items = value
    else:
        return None
    return next((p for v in items if (p := _problem(v, depth + 1)) is not None), None)


def _clean(value: Any) -> Any:
    """``value`` with control characters removed from every string in it."""
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def validate_record(row: int, record: dict[str, Any]) -> ChatIn | RowError:
    """Check one record; return the chat (control characters removed) or why it is rejected."""
    for key, value in record.items():
        if (problem := _problem(key)) is not None:
            return RowError(row, f"a column name {problem}")
        if (problem := _problem(value)) is not None:
            return RowError(row, f"column {key[:40]!r} {problem}")
    id_key = next((c for c in ID_COLUMNS if c in record), None)
    raw_id = record.get(id_key) if id_key else None
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        return RowError(row, "missing or empty chat id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return RowError(row, f"chat id must be a string or an integer, got {type(raw_id).__name__}")
    source_id = str(raw_id).strip()
    if _CONTROL.search(source_id):
        return RowError(row, "chat id contains control characters")
    if len(source_id) > MAX_ID_CHARS:
        return RowError(
            row, f"chat id is {len(source_id):,} characters; the limit is {MAX_ID_CHARS}"
        )
    raw_text = record.get("text")
    if raw_text is None:
        return RowError(row, "missing text")
    if not isinstance(raw_text, str):
        return RowError(row, f"text must be a string, got {type(raw_text).__name__}")
    text = _clean(raw_text)
    if not text.strip():
        return RowError(row, "empty or whitespace-only text")
    raw_meta = {
        k: v for k, v in record.items() if k not in (id_key, "text") and v not in (None, "")
    }
    meta = _clean(raw_meta)
    received_at = None
    for key in TIME_COLUMNS:
        if key in record and record[key] not in (None, ""):
            received_at = _parse_time(record[key])
            if received_at is None:
                return RowError(row, f"{key} is not a date/time")
            break
    return ChatIn(
        source_id=source_id,
        text=text,
        meta=meta,
        received_at=received_at,
        row=row,
        cleaned=text != raw_text or meta != raw_meta,
    )


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = _CONTROL.sub("", value).strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
        for fmt in _TIME_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
