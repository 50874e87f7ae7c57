"""Wires store, training and labeling into the loop: Celery tasks, the CLI and the demo."""

import os

# transformers prints per-load progress bars and reports on stderr; a worker log wants neither.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from orchestrator.errors import StepError
from orchestrator.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "StepError", "load_settings"]
