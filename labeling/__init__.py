"""Label Studio integration: run a local server, push chats as tasks, pull annotations.

Deliberately free of torch/Celery/SQLModel and of other sentiloop packages (but ``domain``,
the shared names) so it can be used (and tested) on its own.
"""

from labeling.backends import (
    BACKEND_TITLE,
    BackendLink,
    connect_ml_backend,
    retrieve_predictions,
)
from labeling.client import LabelStudioClient
from labeling.config import FROM_NAME, LABEL_CHOICES, LABEL_CONFIG, TO_NAME
from labeling.errors import (
    LabelingError,
    LabelStudioAuthError,
    LabelStudioStartError,
    LabelStudioUnavailable,
)
from labeling.guidelines import DEFAULT_GUIDELINES, guidelines_html
from labeling.payloads import (
    IMPORT_CHUNK_SIZE,
    AnnotationOut,
    PredictionIn,
    TaskIn,
    next_cursor,
    shown_url,
)
from labeling.server import STATE_FILE, LabelStudioServer, clean_env, copy_data_dir, parse_port

__all__ = [
    "BACKEND_TITLE",
    "DEFAULT_GUIDELINES",
    "FROM_NAME",
    "IMPORT_CHUNK_SIZE",
    "LABEL_CHOICES",
    "LABEL_CONFIG",
    "STATE_FILE",
    "TO_NAME",
    "AnnotationOut",
    "BackendLink",
    "LabelStudioAuthError",
    "LabelStudioClient",
    "LabelStudioServer",
    "LabelStudioStartError",
    "LabelStudioUnavailable",
    "LabelingError",
    "PredictionIn",
    "TaskIn",
    "clean_env",
    "connect_ml_backend",
    "copy_data_dir",
    "guidelines_html",
    "next_cursor",
    "parse_port",
    "retrieve_predictions",
    "shown_url",
]
