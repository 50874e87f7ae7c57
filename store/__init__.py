"""The loop's durable state (SQLModel): SQLite by default, PostgreSQL at scale.

Knows nothing of Celery, Label Studio or torch; the orchestrator hands it plain values.
"""

from store.db import make_engine, redact_url
from store.errors import DatabaseUnavailable, IngestError, LeaseBusy, StoreError
from store.ingest import ChatIn, ParseResult, RowError, parse_file
from store.models import (
    Annotation,
    AnnotationHistory,
    Chat,
    CycleRun,
    LabelTask,
    ModelVersion,
    Prediction,
    Promotion,
    SelectionRound,
    utcnow,
)
from store.store import (
    AnnotationCounts,
    AnnotationIn,
    Candidates,
    IngestCounts,
    PredictionIn,
    Store,
    TrainingExample,
)

__all__ = [
    "Annotation",
    "AnnotationCounts",
    "AnnotationHistory",
    "AnnotationIn",
    "Candidates",
    "Chat",
    "ChatIn",
    "CycleRun",
    "DatabaseUnavailable",
    "IngestCounts",
    "IngestError",
    "LabelTask",
    "LeaseBusy",
    "ModelVersion",
    "ParseResult",
    "Prediction",
    "PredictionIn",
    "Promotion",
    "RowError",
    "SelectionRound",
    "Store",
    "StoreError",
    "TrainingExample",
    "make_engine",
    "parse_file",
    "redact_url",
    "utcnow",
]
