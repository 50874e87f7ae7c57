"""The inbox protocol: which dropped files are complete, and where they go afterwards.

A file is taken only when it is complete: write it under a hidden name (``.chats.csv``)
or a name with another suffix (``chats.csv.part``) and rename it when done (atomic on one
file system), or, for writers that cannot rename, leave it unchanged for
``SENTILOOP_INBOX_SETTLE_SECONDS``. Files are filed away under a name that is free, so
nothing in ``done/`` or ``failed/`` is ever overwritten.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path
from typing import TextIO

from store import IngestReport
from store.ingest import SUFFIXES

logger = logging.getLogger(__name__)


def ready_files(inbox: Path, settle_seconds: float, now: float | None = None) -> list[Path]:
    """Files in ``inbox`` that are ready to ingest, oldest name first."""
    if not inbox.is_dir():
        return []
    now = time.time() if now is None else now
    ready = []
    for path in sorted(inbox.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in SUFFIXES:
            continue
        try:
            info = path.stat()
        except FileNotFoundError:  # renamed away meanwhile
            continue
        if not path.is_file():
            continue
        if now - info.st_mtime < settle_seconds:
            logger.info("inbox: %s changed %.0f s ago, waiting", path.name, now - info.st_mtime)
            continue
        ready.append(path)
    return ready


def file_away(
    path: Path, folder: Path, error: str | None, report: IngestReport | None = None
) -> Path:
    """Move ``path`` into ``folder`` under a free name; write a report beside it when the
    file failed or rows were rejected. Returns the new path."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = _move_to_free_name(path, folder)
    if error is not None or (report is not None and report.n_rejected):
        with _create_free(folder, dest.name + ".report.txt") as fh:
            fh.write(report_text(dest.name, path.name, error, report))
    return dest


def report_text(name: str, original: str, error: str | None, report: IngestReport | None) -> str:
    """The report beside a filed file: counts, the error, the rejected rows' numbers and
    reasons (never their content: it is customer data)."""
    renamed = f" (dropped as {original})" if name != original else ""
    lines = [f"sentiloop ingest report for {name}{renamed}"]
    lines.append(f"filed at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    if error is not None:
        lines.append(f"failed: {error}")
    if report is not None:
        lines.append(
            f"{report.rows} rows: {report.inserted} new, {report.updated} updated, "
            f"{report.unchanged} unchanged, {report.repeated} repeated ids, "
            f"{report.n_rejected} rejected"
        )
        if report.rejected:
            lines.append("rejected rows (row number: reason):")
            lines += [f"  row {row}: {reason}" for row, reason in report.rejected]
        if report.n_rejected > len(report.rejected):
            lines.append(f"  ... and {report.n_rejected - len(report.rejected)} more")
    return "\n".join(lines) + "\n"


def _candidates(name: str) -> list[str]:
    stem, dot, suffix = name.partition(".")
    return [name] + [f"{stem}-{n}{dot}{suffix}" for n in range(2, 10_000)]


def _move_to_free_name(path: Path, folder: Path) -> Path:
    for name in _candidates(path.name):
        dest = folder / name
        try:
            os.link(path, dest)  # fails if dest exists: never overwrites
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
            if dest.exists():  # no hard links here: check, then rename (we hold the lease)
                continue
            os.rename(path, dest)
            return dest
        path.unlink()
        return dest
    raise FileExistsError(f"no free name for {path.name} in {folder}")


def _create_free(folder: Path, name: str) -> TextIO:
    for candidate in _candidates(name):
        try:
            return (folder / candidate).open("x", encoding="utf-8")
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for {name} in {folder}")
