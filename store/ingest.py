"""Reading chat files (CSV or JSONL): every good row is kept, every bad row gets a reason."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from store.errors import IngestError

logger = logging.getLogger(__name__)

ID_COLUMNS = ("chat_id", "id")
TEXT_COLUMNS = ("text",)
TIME_COLUMNS = ("received_at", "created_at", "timestamp")
#: Longer texts are stored whole; the model only ever sees its first ``max_length`` tokens.
LONG_TEXT_CHARS = 5000
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


@dataclass(frozen=True)
class ChatIn:
    """A validated input row."""

    source_id: str
    text: str
    meta: dict[str, Any]
    received_at: datetime | None


@dataclass(frozen=True)
class RowError:
    """A rejected row: its 1-based record number in the file and why."""

    row: int
    reason: str


@dataclass
class ParseResult:
    chats: list[ChatIn] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    long_texts: int = 0


def parse_file(path: Path) -> ParseResult:
    """Parse a CSV (``.csv``) or JSON Lines (``.jsonl``/``.ndjson``) file of chats."""
    if not path.is_file():
        raise IngestError(f"input file not found: {path}")
    raw = path.read_bytes()
    # surrogateescape keeps invalid bytes visible per field, so one bad row does not sink the file
    content = raw.decode("utf-8", errors="surrogateescape")
    if content.startswith("\ufeff"):
        content = content[1:]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        records = _csv_records(content, path)
    elif suffix in (".jsonl", ".ndjson"):
        records = _jsonl_records(content)
    else:
        raise IngestError(f"{path}: unsupported file type {suffix!r}; use .csv or .jsonl")
    result = ParseResult()
    for row, record in records:
        if isinstance(record, RowError):
            result.errors.append(record)
            continue
        chat_or_error = validate_record(row, record)
        if isinstance(chat_or_error, RowError):
            result.errors.append(chat_or_error)
        else:
            if len(chat_or_error.text) > LONG_TEXT_CHARS:
                result.long_texts += 1
            result.chats.append(chat_or_error)
    return result


def _csv_records(content: str, path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = reader.fieldnames or []
    if not any(c in header for c in ID_COLUMNS) or not any(c in header for c in TEXT_COLUMNS):
        raise IngestError(
            f"{path}: the header must name an id column ({' or '.join(ID_COLUMNS)}) "
            f"and a text column; found {header}"
        )
    for number, rec in enumerate(reader, start=1):
        if None in rec:  # more fields than the header
            extra = len(rec[None])
            yield (
                number,
                RowError(number, f"{len(header) + extra} fields, header has {len(header)}"),
            )
            continue
        if any(v is None for v in rec.values()):
            yield number, RowError(number, "fewer fields than the header")
            continue
        yield number, dict(rec)


def _jsonl_records(content: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    number = 0
    for line in content.splitlines():
        if not line.strip():
            continue
        number += 1
        if _has_bad_bytes(line):
            yield number, RowError(number, "not valid UTF-8")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, RowError(number, f"not valid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield number, RowError(number, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield number, obj


def _has_bad_bytes(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def validate_record(row: int, record: dict[str, Any]) -> ChatIn | RowError:
    """Check one record; return the chat or the reason it is rejected."""
    for key, value in record.items():
        if isinstance(value, str) and _has_bad_bytes(value):
            return RowError(row, f"column {key!r} is not valid UTF-8")
    id_key = next((c for c in ID_COLUMNS if c in record), None)
    raw_id = record.get(id_key) if id_key else None
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        return RowError(row, "missing or empty chat id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return RowError(row, f"chat id must be a string or an integer, got {type(raw_id).__name__}")
    text = record.get("text")
    if text is None:
        return RowError(row, "missing text")
    if not isinstance(text, str):
        return RowError(row, f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        return RowError(row, "empty or whitespace-only text")
    meta = {k: v for k, v in record.items() if k not in (id_key, "text") and v not in (None, "")}
    received_at = None
    for key in TIME_COLUMNS:
        if key in record and record[key] not in (None, ""):
            received_at = _parse_time(record[key])
            if received_at is None:
                return RowError(row, f"{key} is not a date/time: {str(record[key])[:40]!r}")
            break
    return ChatIn(source_id=str(raw_id).strip(), text=text, meta=meta, received_at=received_at)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
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
    return parsed.astimezone(UTC)
