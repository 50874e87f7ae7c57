"""The label-driven loop: an annotation event asks for a pull at once, and a retrain starts
when enough new labels have arrived or the oldest has waited too long.

Label Studio delivers a webhook once, with no retry, so an event is only a hint: it is
recorded in the store (``request``) and the work is re-derived from the store each time. A
burst of events therefore makes one pull at a time and one retrain; an event that never
arrives is made up by the scheduled cycle, which pulls and retrains anyway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator import steps
from orchestrator.context import Context, Progress
from orchestrator.errors import PullBusy
from orchestrator.evaluation import eval_set
from store import Store, TrainingExample, utcnow

logger = logging.getLogger(__name__)

#: A requested retrain that has not started after this long (plus the settle time) is
#: taken as lost (its message was), and may be requested again.
LOST_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class Due:
    """Whether a retrain should start now, why, and how many labels wait for one."""

    due: bool
    reason: str
    waiting: int


def ask_for_pull(store: Store, action: str) -> None:
    """Record an annotation event; the doorbell (a Celery message) is rung by the caller."""
    store.request("pull", action=action)


def pull_wanted(ctx: Context) -> bool:
    """An event arrived after the newest pull that started (or none has)."""
    store = ctx.store
    asked = store.requested_at("pull")
    if asked is None:
        return False
    started = store.last_started("pull", ("running", "ok"))
    return started is None or asked > started


def waiting_labels(ctx: Context) -> list[TrainingExample]:
    """Labels (this revision of them) that neither production nor the newest version has
    learned; evaluation labels never count. A candidate that is waiting for a person, or
    that failed the gate, has learned its labels: they do not start another retrain."""
    store = ctx.store
    examples = store.training_examples()
    held_out = eval_set(ctx, examples).held_out
    versions = {v.number for v in (store.production(), store.newest_version()) if v is not None}
    known = [store.learned(number) for number in sorted(versions)]
    return [e for e in examples if e.chat_id not in held_out and not any(k.knows(e) for k in known)]


def retrain_due(ctx: Context, now: datetime | None = None) -> Due:
    """The trigger: SENTILOOP_RETRAIN_AFTER_LABELS new labels, or the oldest of them older
    than SENTILOOP_RETRAIN_MAX_WAIT_SECONDS; or an incremental candidate failed the gate
    (its labels then come with a full retrain, at once)."""
    settings, store = ctx.settings, ctx.store
    now = now or utcnow()
    waiting = waiting_labels(ctx)
    newest, production = store.newest_version(), store.production()
    if (
        newest is not None
        and production is not None
        and newest.number > production.number
        and newest.mode == "incremental"
        and newest.status == "candidate"
        and newest.gate
        and not newest.gate.get("passed", True)
    ):
        return Due(True, f"incremental v{newest.number} failed the gate", len(waiting))
    if not waiting:
        return Due(False, "no new labels", 0)
    n = len(waiting)
    if n >= settings.retrain_after_labels:
        return Due(True, f"{n} new labels (SENTILOOP_RETRAIN_AFTER_LABELS)", n)
    age = (now - min(e.pulled_at for e in waiting)).total_seconds()
    if age >= settings.retrain_max_wait_seconds:
        return Due(True, f"a label has waited {age:.0f} s (SENTILOOP_RETRAIN_MAX_WAIT_SECONDS)", n)
    return Due(
        False,
        f"{n} new labels: waiting for {settings.retrain_after_labels} or "
        f"{settings.retrain_max_wait_seconds - age:.0f} s more",
        n,
    )


def retrain_requested(ctx: Context, now: datetime | None = None) -> bool:
    """A retrain was asked for and has not started yet (nor been lost)."""
    store = ctx.store
    asked = store.requested_at("retrain")
    if asked is None:
        return False
    # a run that was skipped because another retrain held the lease does not answer it: the
    # request's own message keeps trying until that retrain ends
    started = store.last_started("retrain", ("running", "ok", "failed"))
    if started is not None and started >= asked:
        return False
    now = now or utcnow()
    return now - asked < LOST_AFTER + timedelta(seconds=ctx.settings.retrain_settle_seconds)


def claim_retrain(ctx: Context) -> Due | None:
    """If a retrain is due and none is asked for already, ask for one (the caller sends
    its message, delayed by SENTILOOP_RETRAIN_SETTLE_SECONDS so the rest of a burst lands
    in the same retrain) and say why; else None."""
    due = retrain_due(ctx)
    if not due.due or retrain_requested(ctx):
        return None
    ctx.store.request("retrain", reason=due.reason)
    logger.info("retrain requested: %s", due.reason)
    return due


def pull_if_wanted(ctx: Context, trigger: str, progress: Progress) -> dict[str, Any] | None:
    """The pull an event asked for, unless a pull started since; raises PullBusy while
    another pull runs."""
    if not pull_wanted(ctx):
        return None
    result = steps.run_step(ctx, "pull", steps.pull, trigger=trigger, progress=progress)
    if result.get("busy"):
        raise PullBusy(str(result.get("reason")))
    return result


def retrain_if_due(ctx: Context, trigger: str, progress: Progress) -> dict[str, Any]:
    """The retrain a trigger asked for, on every label there is by now; nothing when the
    labels were learned meanwhile (a concurrent retrain, or the scheduled cycle)."""
    from orchestrator import registry

    due = retrain_due(ctx)
    if not due.due:  # learned meanwhile: the request is answered
        ctx.store.withdraw("retrain")
        return {"status": "skipped", "reason": due.reason}
    result = steps.run_step(ctx, "retrain", registry.retrain, trigger=trigger, progress=progress)
    return {**result, "trigger_reason": due.reason}
