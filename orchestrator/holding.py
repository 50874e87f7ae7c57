"""Holding steps off: a backup or an erasure takes the leases of the steps that would change
what it reads, waiting for running ones, so no step runs while it works."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from orchestrator.errors import OrchestratorError
from store import LeaseBusy, Store

__all__ = ["steps_held"]

logger = logging.getLogger(__name__)


@contextmanager
def steps_held(
    store: Store, steps: Sequence[str], wait_s: float, error: type[OrchestratorError]
) -> Iterator[None]:
    """Hold the leases of ``steps``, waiting up to ``wait_s`` for running ones; ``error``
    says so when one is still running by then."""
    deadline = time.monotonic() + wait_s
    with ExitStack() as stack:
        for step in steps:
            while True:
                try:
                    stack.enter_context(store.lease(step))
                    break
                except LeaseBusy:
                    if time.monotonic() > deadline:
                        raise error(
                            f"the {step} step is still running after {wait_s:.0f} s; "
                            "try again when it has finished (or pass a longer --wait)"
                        ) from None
                    logger.info("waiting for the running %s step to finish", step)
                    time.sleep(2)
        yield
