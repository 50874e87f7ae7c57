"""Typed errors of the store: callers catch these, never raw SQLAlchemy ones."""

from domain import SentiloopError


class StoreError(SentiloopError):
    """Base class of every error raised by ``store``."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached; the message names the setting to check."""


class IngestError(StoreError):
    """A whole input file could not be ingested (unreadable, wrong format, no valid row)."""


class LeaseBusy(StoreError):
    """Another worker holds the lease for this step; the caller should skip, not wait."""


class LeaseLost(StoreError):
    """This worker's lease expired and was taken over: its writes are refused (fencing)."""


class PromotionConflict(StoreError):
    """Production changed between the gate's comparison and the promotion: nothing changed."""
