"""The ingest step: files dropped into the inbox, and single files (CLI, demo)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator import inbox
from orchestrator.context import Context, Progress
from orchestrator.errors import StepError
from orchestrator.settings import Settings
from store import (
    ChatIn,
    DatabaseUnavailable,
    IngestError,
    IngestReport,
)
from store import ingest_file as store_ingest_file

logger = logging.getLogger(__name__)


# -- ingest ---------------------------------------------------------------------------------


def ingest_file(
    ctx: Context, path: Path, progress: Callable[[int], None] | None = None
) -> IngestReport:
    """Store every good row of the file and report every bad one with its reason; with
    SENTILOOP_PII=mask-at-ingest the text and metadata are masked before they are stored."""
    return store_ingest_file(ctx.store, path, progress, masking_at_ingest(ctx.settings))


def masking_at_ingest(settings: Settings) -> Callable[[ChatIn], ChatIn] | None:
    if settings.pii != "mask-at-ingest":
        return None
    mask = settings.masker.mask

    def value(v: Any) -> Any:  # metadata may nest: every string in it is masked
        if isinstance(v, str):
            return mask(v)
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    def masked(chat: ChatIn) -> ChatIn:
        return replace(chat, text=mask(chat.text), meta=value(chat.meta))

    return masked


def ingest_inbox(ctx: Context, progress: Progress) -> dict[str, Any]:
    """Ingest the complete files in ``home/inbox`` (see :func:`inbox.ready_files`). A file
    ingested is moved to ``done/``, one that cannot be read at all to ``failed/``, each with
    a report beside it when rows were rejected; neither overwrites anything. A transient
    error (the database busy or unreachable) leaves the file where it is for the next tick
    and fails the step, so the failure shows in ``sentiloop status``."""
    inbox_dir = ctx.settings.inbox_dir
    files = inbox.ready_files(inbox_dir, ctx.settings.inbox_settle_seconds)
    totals = {"files": 0, "failed": 0, "inserted": 0, "updated": 0, "rejected": 0}
    left: list[str] = []
    for i, path in enumerate(files):
        try:
            report = ingest_file(ctx, path)
        except IngestError as exc:  # the file as a whole is unusable: no retry will help
            logger.error("ingest of %s failed: %s", path.name, exc)
            inbox.file_away(path, inbox_dir / "failed", str(exc))
            totals["failed"] += 1
            continue
        except DatabaseUnavailable:
            raise  # the next files would fail too; Celery retries the step
        except Exception as exc:  # unexpected: keep the file, say so, carry on with the rest
            logger.exception("ingest of %s failed; the file stays in the inbox", path.name)
            left.append(f"{path.name}: {type(exc).__name__}")
            continue
        if report.stored == 0:
            inbox.file_away(path, inbox_dir / "failed", "no valid row", report)
            totals["failed"] += 1
        else:
            inbox.file_away(path, inbox_dir / "done", None, report)
            totals["files"] += 1
        totals["inserted"] += report.inserted
        totals["updated"] += report.updated
        totals["rejected"] += report.n_rejected
        progress("ingest", i + 1, len(files))
    if left:
        raise StepError(f"{len(left)} inbox files left for the next tick: " + "; ".join(left))
    return totals
