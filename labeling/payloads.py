"""What travels between sentiloop and Label Studio: tasks in, annotations out, and the
translation between our vocabulary (chats, sentiment labels, predictions) and Label Studio's
JSON. No HTTP here: :mod:`labeling.client` makes the calls."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from labeling.config import FROM_NAME, LABEL_CHOICES, TO_NAME
from labeling.errors import LabelingError

__all__ = [
    "IMPORT_CHUNK_SIZE",
    "AnnotationOut",
    "PredictionIn",
    "TaskIn",
    "next_cursor",
    "shown_url",
]

logger = logging.getLogger(__name__)

IMPORT_CHUNK_SIZE = 500
"""Tasks per import request: keeps each request small while staying fast (~0.2 s / 200)."""

LS_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # the only format Datetime filters accept


@dataclass(frozen=True, slots=True)
class PredictionIn:
    """The model's guess, shown to annotators as a pre-annotation.

    ``score`` is the model's confidence in ``label`` (0..1), stored as Label Studio's
    prediction score so annotators can sort/filter by it.
    """

    label: str
    score: float
    model_version: str


@dataclass(frozen=True, slots=True)
class TaskIn:
    """One chat to label. ``meta`` is a short human-readable line (channel, time)."""

    chat_id: str
    text: str
    meta: str
    prediction: PredictionIn | None = None


@dataclass(frozen=True, slots=True)
class AnnotationOut:
    """One annotation as pulled back; upsert by ``annotation_id``.

    ``label`` is None for skipped (cancelled) annotations or unknown choices.
    """

    annotation_id: int
    task_id: int
    chat_id: str
    label: str | None
    annotator: str | None
    created_at: datetime
    updated_at: datetime
    cancelled: bool
    lead_time: float | None = None  # seconds the annotator spent on it


def next_cursor(annotations: Sequence[AnnotationOut], previous: datetime | None) -> datetime | None:
    """Cursor for the next ``annotations_since`` call after pulling ``annotations``.

    The latest annotation ``updated_at`` is safe: Label Studio bumps the task's
    ``updated_at`` after saving the annotation, so any later change is still >= it
    (re-fetching the boundary tasks is harmless because callers upsert).
    """
    latest = max((a.updated_at for a in annotations), default=None)
    if latest is None:
        return previous
    if previous is None:
        return latest
    return max(latest, previous)


def shown_url(url: str) -> str:
    """``url`` without a user or password in it, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=f"***@{netloc}"))


def _choices_result(label: str) -> list[dict[str, Any]]:
    if label not in LABEL_CHOICES:
        raise ValueError(f"unknown label {label!r}; expected one of {LABEL_CHOICES}")
    return [
        {
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def _task_payload(task: TaskIn) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "data": {"text": task.text, "chat_id": task.chat_id, "meta": task.meta}
    }
    if task.prediction is not None:
        pred = task.prediction
        if not 0.0 <= pred.score <= 1.0:
            raise ValueError(f"prediction score must be in [0, 1], got {pred.score}")
        payload["predictions"] = [
            {
                "model_version": pred.model_version,
                "score": float(pred.score),
                "result": _choices_result(pred.label),
            }
        ]
    return payload


def _as_utc(value: Any) -> datetime:
    """Parse SDK datetimes (sometimes datetime, sometimes ISO string) into aware UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise LabelingError(f"unexpected datetime value from Label Studio: {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _format_filter_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("cursor must be timezone-aware")
    return value.astimezone(UTC).strftime(LS_DATETIME_FORMAT)


def _label_from_result(result: Any, annotation_id: int) -> str | None:
    if not isinstance(result, list):
        return None
    for item in result:
        if not isinstance(item, dict) or item.get("from_name") != FROM_NAME:
            continue
        choices = (item.get("value") or {}).get("choices") or []
        if not choices:
            continue
        raw = str(choices[0])
        if raw in LABEL_CHOICES:
            return raw
        if raw.lower() in LABEL_CHOICES:  # config edited in the UI without aliases
            return raw.lower()
        logger.warning("Annotation %d has unknown sentiment choice %r", annotation_id, raw)
        return None
    return None


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def _annotator(annotation: dict[str, Any]) -> str | None:
    # Label Studio formats it as "<first> <last> <email>, <user id>".
    name = annotation.get("created_username")
    if isinstance(name, str) and name.strip():
        return name.rsplit(",", 1)[0].strip() or None
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("email") or completed_by.get("id")
    return None if completed_by is None else str(completed_by)
