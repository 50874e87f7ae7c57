"""Streaming a chat file into the store: parse, validate and write a chunk at a time, so a
multi-gigabyte export takes the memory of one chunk, and no bad row costs the others."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.ingest import LONG_TEXT_CHARS, ChatIn, RowError, iter_file
from store.models import utcnow

if TYPE_CHECKING:
    from store.store import Store

logger = logging.getLogger(__name__)

#: Rows parsed before they are written: within a chunk the last row of an id wins outright.
INGEST_CHUNK = 2000
#: Rejections kept with their reasons (the rest are counted): a file of a million bad rows
#: must not hold a million reasons in memory.
KEPT_REJECTIONS = 10_000


@dataclass
class IngestReport:
    """What one file gave: every record is stored (new, updated, unchanged or repeated) or
    rejected with its row number and reason, never both and never neither."""

    path: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    repeated: int = 0  # rows whose chat id appeared earlier in the same file (the last row wins)
    long_texts: int = 0
    cleaned: int = 0  # rows stored with control characters removed
    n_rejected: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # the first KEPT_REJECTIONS

    @property
    def stored(self) -> int:
        return self.inserted + self.updated + self.unchanged + self.repeated

    def reject(self, row: int, reason: str) -> None:
        self.n_rejected += 1
        if len(self.rejected) < KEPT_REJECTIONS:
            self.rejected.append((row, reason))

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "repeated": self.repeated,
            "rejected": self.n_rejected,
            "long_texts": self.long_texts,
            "cleaned": self.cleaned,
        }


def ingest_file(
    store: Store,
    path: Path,
    progress: Callable[[int], None] | None = None,
    transform: Callable[[ChatIn], ChatIn] | None = None,
) -> IngestReport:
    """Store every good row of ``path`` and report every bad one (parse or database) by its
    row number and reason. Raises IngestError when the file as a whole cannot be read, and
    DatabaseUnavailable when the database is unreachable or locked (nothing is lost: the
    rows written so far are idempotent to write again). ``transform`` rewrites each good row
    before it is stored (masking personal data on the way in)."""
    since = utcnow()
    report = IngestReport(str(path))
    chunk: list[ChatIn] = []

    def flush() -> None:
        counts = store.add_chats(chunk, since=since)
        report.inserted += counts.inserted
        report.updated += counts.updated
        report.unchanged += counts.unchanged
        report.repeated += counts.repeated
        for row, reason in counts.refused:
            report.reject(row, reason)
        chunk.clear()
        if progress is not None:
            progress(report.rows)

    for record in iter_file(path):
        report.rows += 1
        if isinstance(record, RowError):
            report.reject(record.row, record.reason)
            continue
        report.long_texts += len(record.text) > LONG_TEXT_CHARS
        report.cleaned += record.cleaned
        chunk.append(record if transform is None else transform(record))
        if len(chunk) >= INGEST_CHUNK:
            flush()
    if chunk:
        flush()
    report.rejected.sort()
    for row, reason in report.rejected[:20]:
        logger.info("%s: row %d rejected: %s", path.name, row, reason)
    if report.n_rejected > 20:
        logger.info("%s: %d more rows rejected", path.name, report.n_rejected - 20)
    return report
