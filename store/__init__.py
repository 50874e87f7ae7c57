"""The loop's durable state (SQLModel): SQLite by default, PostgreSQL at scale.

Knows nothing of Celery, Label Studio or torch; the orchestrator hands it plain values.
"""

from store.db import make_engine, redact_url
from store.errors import (
    DatabaseUnavailable,
    IngestError,
    LeaseBusy,
    LeaseLost,
    PromotionConflict,
    StoreError,
)
from store.fence import Fence, fenced
from store.ingest import ChatIn, ParseResult, RowError, iter_file, parse_file
from store.intake import IngestReport, ingest_file
from store.models import (
    REVIEW,
    Annotation,
    AnnotationHistory,
    ApiKey,
    Chat,
    ConsensusLabel,
    CycleRun,
    Erasure,
    LabelTask,
    ModelVersion,
    Operator,
    Prediction,
    Promotion,
    SelectionRound,
    ShadowStat,
    utcnow,
)
from store.runs import WORKER_LEASE_PREFIX, holder_gone
from store.store import (
    AnnotationCounts,
    AnnotationIn,
    Answer,
    AnswerGroup,
    Candidates,
    ErasureIn,
    IngestCounts,
    PredictionIn,
    ShadowCounts,
    Store,
    TrainingExample,
)
from store.versions import PRODUCTION_CHANNEL, Learned

__all__ = [
    "PRODUCTION_CHANNEL",
    "REVIEW",
    "WORKER_LEASE_PREFIX",
    "Annotation",
    "AnnotationCounts",
    "AnnotationHistory",
    "AnnotationIn",
    "Answer",
    "AnswerGroup",
    "ApiKey",
    "Candidates",
    "Chat",
    "ChatIn",
    "ConsensusLabel",
    "CycleRun",
    "DatabaseUnavailable",
    "Erasure",
    "ErasureIn",
    "Fence",
    "IngestCounts",
    "IngestError",
    "IngestReport",
    "LabelTask",
    "Learned",
    "LeaseBusy",
    "LeaseLost",
    "ModelVersion",
    "Operator",
    "ParseResult",
    "Prediction",
    "PredictionIn",
    "Promotion",
    "PromotionConflict",
    "RowError",
    "SelectionRound",
    "ShadowCounts",
    "ShadowStat",
    "Store",
    "StoreError",
    "TrainingExample",
    "fenced",
    "holder_gone",
    "ingest_file",
    "iter_file",
    "make_engine",
    "parse_file",
    "redact_url",
    "utcnow",
]
