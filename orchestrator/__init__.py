"""Wires store, training and labeling into the loop: Celery tasks, the CLI and the demo."""

from orchestrator.errors import StepError
from orchestrator.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "StepError", "load_settings"]
