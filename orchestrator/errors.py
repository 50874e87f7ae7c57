"""Errors of the orchestrator (configuration errors live with the settings)."""


class StepError(Exception):
    """A step cannot do its work for a reason the operator must fix (the message says which)."""
