"""Celery tasks: thin doorbells around the steps; the store holds all state."""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Task, chain, chord

from labeling import LabelStudioUnavailable
from orchestrator import live, registry, steps
from orchestrator.celery_app import app
from orchestrator.context import Context
from orchestrator.errors import PullBusy
from orchestrator.settings import SCORING_QUEUE, load_settings
from store import DatabaseUnavailable, Store

logger = logging.getLogger(__name__)

_CONTEXT: Context | None = None
RETRY_ON = (LabelStudioUnavailable, DatabaseUnavailable)


def context() -> Context:
    """One context per worker process, built lazily (after the fork)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = Context.from_settings(load_settings())
    return _CONTEXT


def _progress(task: Task) -> steps.Progress:
    def report(stage: str, done: int, total: int) -> None:
        if task.request.id:
            task.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    return report


def progress_of(state: str, info: object) -> tuple[str, int, int] | None:
    """(stage, done, total) from a step task's state and info, or None when it reports no
    progress. ``AsyncResult.state`` and ``.info`` are two reads of the backend: the task
    may finish between them, leaving a PROGRESS state with the final result as its info."""
    if state != "PROGRESS" or not isinstance(info, dict):
        return None
    stage, done, total = info.get("stage"), info.get("done"), info.get("total")
    if isinstance(stage, str) and isinstance(done, int) and isinstance(total, int):
        return stage, done, total
    return None


MAX_RETRIES = 3


def _in_cycle(
    task: Task, cycle_id: str | None, run: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run a step; a service that is down is retried (5, 10, 20 s). Inside a cycle's chain a
    step that still fails returns ``{"status": "failed"}`` instead of raising: a failing push
    must not keep pull and retrain from running. The store has recorded the failure either way."""
    try:
        return run()
    except RETRY_ON as exc:
        if task.request.retries < MAX_RETRIES:
            raise task.retry(exc=exc, countdown=5 * 2**task.request.retries) from exc
        if cycle_id is None:
            raise
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        if cycle_id is None:
            raise
        logger.error("step failed in cycle %s: %s: %s", cycle_id, type(exc).__name__, exc)
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _step_task(name: str) -> Any:
    @app.task(bind=True, name=f"sentiloop.{name}", max_retries=MAX_RETRIES)
    def task(
        self: Task,
        cycle_id: str | None = None,
        trigger: str = "manual",
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        options = dict(options or {})
        if name == "push":  # recorded with the selection round
            options.setdefault("cycle_id", cycle_id)
        return _in_cycle(
            self,
            cycle_id,
            lambda: steps.run_step(
                context(),
                name,
                functools.partial(steps.STEP_FUNCTIONS[name], **options),
                cycle_id=cycle_id,
                trigger=trigger,
                progress=_progress(self),
            ),
        )

    return task


@app.task(bind=True, name="sentiloop.score_shard", max_retries=MAX_RETRIES)
def score_shard(
    self: Task, index: int, count: int, cycle_id: str | None = None, trigger: str = "manual"
) -> dict[str, Any]:
    """One shard of the score step; its own lease, so a re-delivered shard is skipped."""
    result = _in_cycle(
        self,
        cycle_id,
        lambda: steps.run_step(
            context(),
            f"score:{index}/{count}",
            functools.partial(steps.score_shard, index=index, count=count),
            cycle_id=cycle_id,
            trigger=trigger,
            progress=_progress(self),
        ),
    )
    return {**result, "worker": self.request.hostname}


@app.task(name="sentiloop.score_collect")
def score_collect(
    shards: list[dict[str, Any]], cycle_id: str | None = None, trigger: str = "manual"
) -> dict[str, Any]:
    """The chord's body: records the score step of the cycle with the shards' totals."""

    def total(ctx: Context, progress: steps.Progress) -> dict[str, Any]:
        stop_set = steps.score_stop_set(ctx)
        return {
            "shards": len(shards),
            "scored": sum(int(r.get("scored", 0)) for r in shards) + stop_set["scored"],
            "written": sum(int(r.get("written", 0)) for r in shards) + stop_set["written"],
            "workers": sorted({str(r.get("worker")) for r in shards}),
        }

    return steps.run_step(context(), "score", total, cycle_id=cycle_id, trigger=trigger)


def score_group(shards: int, cycle_id: str | None = None, trigger: str = "manual") -> Any:
    """The score step as a chord: ``shards`` shard tasks, any worker on the ``scoring``
    queue takes any of them, then one task sums them up."""
    kwargs = {"cycle_id": cycle_id, "trigger": trigger}
    return chord(
        [score_shard.si(index=i, count=shards, **kwargs) for i in range(shards)],
        # a chord's body is sent by the worker that finishes the last shard, bypassing
        # task_routes: name its queue, or a scoring-only worker pool never runs it
        score_collect.s(**kwargs).set(queue=SCORING_QUEUE),
    )


ingest = _step_task("ingest")
score = _step_task("score")
push = _step_task("push")
pull = _step_task("pull")
retrain = _step_task("retrain")
STEP_TASKS: dict[str, Any] = {
    "ingest": ingest,
    "score": score,
    "push": push,
    "pull": pull,
    "retrain": retrain,
}


@app.task(bind=True, name="sentiloop.ingest_file")
def ingest_file(self: Task, path: str) -> dict[str, Any]:
    report = steps.ingest_file(context(), Path(path))
    return {**report.as_dict(), "errors": report.rejected[:100]}


@app.task(bind=True, name="sentiloop.evaluate")
def evaluate(self: Task, version: int) -> dict[str, Any]:
    return registry.evaluate_version(context(), version, progress=_progress(self))


@app.task(name="sentiloop.cycle")
def cycle(trigger: str = "manual", cycle_id: str | None = None) -> str:
    """Start one cycle: its steps as a chain, each keyed by the same cycle id."""
    cycle_id = cycle_id or steps.new_cycle_id()
    cycle_chain(cycle_id, trigger).apply_async()
    return cycle_id


def cycle_chain(cycle_id: str, trigger: str, shards: int | None = None) -> Any:
    """The cycle's steps as a chain; with ``shards`` > 1 (default: the setting
    SENTILOOP_SCORE_SHARDS) the score step is a chord of shard tasks."""
    kwargs = {"cycle_id": cycle_id, "trigger": trigger}
    shards = shards or load_settings().score_shards
    parts = [
        score_group(shards, **kwargs)
        if name == "score" and shards > 1
        else STEP_TASKS[name].si(**kwargs)
        for name in steps.STEPS
    ]
    return chain(*parts)


@app.task(bind=True, name="sentiloop.on_labels", max_retries=30)
def on_labels(self: Task, trigger: str = "webhook") -> dict[str, Any]:
    """Pull what an annotation event announced (unless a pull has started since), then ask
    for a retrain when one is due. Beat also sends it every SENTILOOP_LABELS_CHECK_SECONDS:
    a doorbell that was never rung, or a label that has waited long enough, is noticed."""
    ctx = context()
    try:
        pulled = live.pull_if_wanted(ctx, trigger, _progress(self))
    except PullBusy as exc:
        raise self.retry(exc=exc, countdown=2) from exc
    except RETRY_ON as exc:
        raise self.retry(exc=exc, countdown=5) from exc
    due = live.claim_retrain(ctx)
    if due is not None:
        retrain_on_labels.apply_async(
            kwargs={"trigger": trigger}, countdown=ctx.settings.retrain_settle_seconds
        )
    return {"pull": pulled, "retrain_requested": due.reason if due else None}


@app.task(bind=True, name="sentiloop.retrain_on_labels", max_retries=40)
def retrain_on_labels(self: Task, trigger: str = "labels") -> dict[str, Any]:
    """The retrain the labels asked for, on every label there is by now; then the labels
    that arrived while it trained may ask for the next one."""
    ctx = context()
    result = live.retrain_if_due(ctx, trigger, _progress(self))
    if result.get("busy"):  # another retrain runs: its labels may not include these
        raise self.retry(countdown=15)
    due = live.claim_retrain(ctx)
    if due is not None:
        retrain_on_labels.apply_async(
            kwargs={"trigger": trigger}, countdown=ctx.settings.retrain_settle_seconds
        )
    return result


def ring_for_labels(store: Store) -> Callable[[str], None]:
    """The doorbell of Label Studio's annotation events (the service's ``/webhook``): the
    request is recorded first, so a message the broker loses is still noticed by beat.

    The events of one second share one message, sent for the end of that second: a pull
    that starts then answers all of them, so a burst of labels makes one message a second at
    most instead of one per label (which the SQLite broker took as competing writes)."""
    lock = threading.Lock()
    sent_for = 0

    def ring(action: str) -> None:
        nonlocal sent_for
        live.ask_for_pull(store, action)
        due = math.floor(time.time()) + 1
        with lock:
            if due <= sent_for:
                return
            sent_for = due
        eta = datetime.fromtimestamp(due, UTC)
        on_labels.apply_async(kwargs={"trigger": "webhook"}, eta=eta, retry=False)

    return ring


@app.task(name="sentiloop.ping")
def ping() -> str:
    """Lets callers wait until a worker is consuming (the SQLite broker has no remote control)."""
    return "pong"
