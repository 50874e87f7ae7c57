"""The loop's steps and how one runs. Each re-derives its work from the store and holds a lease
while it runs, so a lost, repeated or concurrent Celery message changes nothing; the steps
themselves live in step_ingest, step_score, step_sync and retrain."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from orchestrator import registry
from orchestrator.context import Context, Progress
from orchestrator.step_ingest import ingest_file, ingest_inbox
from orchestrator.step_score import score, score_shard, score_stop_set
from orchestrator.step_sync import label_studio, pull, push, resync
from store import (
    LeaseBusy,
    LeaseLost,
    fenced,
)

logger = logging.getLogger(__name__)


STEPS = ("ingest", "score", "push", "pull", "retrain")


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def new_cycle_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_step(
    ctx: Context,
    step: str,
    fn: Callable[[Context, Progress], dict[str, Any]],
    *,
    cycle_id: str | None = None,
    trigger: str = "manual",
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Run one step under its lease and record it. A step this cycle already finished is
    skipped, and so is one that another worker is running right now.

    The lease is taken before "already done?" is asked and the run is recorded as finished
    before it is released, so a repeated message can never slip in between; every write the
    step makes, its own record included, is fenced by the lease (a run whose lease was taken
    over writes nothing more and is recorded as ``lost``)."""
    cycle_id = cycle_id or new_cycle_id()
    store = ctx.store
    store.reap_dead_runs()
    started = time.monotonic()
    try:
        with store.lease(step) as lease:
            if store.step_done(cycle_id, step):
                return {"status": "skipped", "reason": "already done in this cycle"}
            run_id = store.start_run(cycle_id, step, trigger, owner=lease.owner)
            try:
                with fenced(lease):
                    counts = fn(ctx, progress)
                    counts["seconds"] = round(time.monotonic() - started, 2)
                    status = "skipped" if "skipped" in counts else "ok"
                    store.finish_run(run_id, status, counts)
            except LeaseLost as exc:
                store.finish_run(run_id, "lost", {}, error=str(exc))
                raise
            except Exception as exc:
                store.finish_run(run_id, "failed", {}, error=f"{type(exc).__name__}: {exc}")
                raise
    except LeaseBusy as exc:
        run_id = store.start_run(cycle_id, step, trigger)
        store.finish_run(run_id, "skipped", {"reason": str(exc)})
        return {"status": "skipped", "reason": str(exc), "busy": True}
    return {"status": status, **counts}


STEP_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": ingest_inbox,
    "score": score,
    "push": push,
    "pull": pull,
    "retrain": registry.retrain,
}

__all__ = [
    "STEPS",
    "STEP_FUNCTIONS",
    "Progress",
    "ingest_file",
    "ingest_inbox",
    "label_studio",
    "new_cycle_id",
    "pull",
    "push",
    "resync",
    "run_step",
    "score",
    "score_shard",
    "score_stop_set",
]
