"""Errors of the orchestrator (configuration errors live with the settings)."""

from domain import SentiloopError


class OrchestratorError(SentiloopError):
    """Base class of the orchestrator's own errors; the CLI prints them as one line."""


class StepError(OrchestratorError):
    """A step cannot do its work for a reason the operator must fix (the message says which)."""


class BackupError(OrchestratorError):
    """A backup cannot be written or restored as asked (the message says why and what to do)."""


class LabelStudioMismatch(StepError):
    """The configured Label Studio is not the one the store's tasks were made in."""


class PullBusy(OrchestratorError):
    """Another pull is running and may have read Label Studio before an annotation event:
    the event's pull is tried again once it is done."""


class AccessDenied(OrchestratorError):
    """No known operator key, or its role may not do this (the message says which role may)."""
