"""Is the loop healthy? What `sentiloop status --check` reports to cron and monitors.

Everything here only reads: the store, and Label Studio's /health.
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from orchestrator.context import Context
from orchestrator.steps import STEPS
from store import WORKER_LEASE_PREFIX, holder_gone, utcnow

#: A step that failed or was skipped this many times in a row makes the loop degraded.
REPEATED = 3


def problems(ctx: Context) -> list[str]:
    """Why the loop is degraded, one line each; empty when it is healthy."""
    store, settings = ctx.store, ctx.settings
    found: list[str] = []
    for run in store.dead_runs():
        found.append(f"{run.step} (cycle {run.cycle_id}): {holder_gone(run)}")
    for lease in store.leases():
        if lease.name.startswith(WORKER_LEASE_PREFIX):
            continue  # a worker's lease only says it is alive: counted below
        if lease.expires_at < utcnow():
            found.append(
                f"lease {lease.name!r} expired at {lease.expires_at:%Y-%m-%d %H:%M:%S} "
                f"but was never released (pid {lease.pid} on {lease.host})"
            )
    for step in STEPS:
        recent = store.runs(limit=REPEATED, step=step)
        if len(recent) == REPEATED and all(r.status in ("failed", "skipped") for r in recent):
            last = recent[0]
            why = last.error or str(last.counts.get("skipped") or last.counts.get("reason", ""))
            found.append(f"{step} has {last.status} {REPEATED} times in a row: {why[:200]}")
    if not store.live_workers():
        found.append("no worker is running: nothing executes the cycles (`sentiloop worker`)")
    open_tasks = store.open_task_count()
    if open_tasks >= settings.max_open_tasks:
        found.append(
            f"{open_tasks} tasks wait for annotators, the cap (SENTILOOP_MAX_OPEN_TASKS) is "
            f"{settings.max_open_tasks}: nothing new is pushed"
        )
    last_run = store.runs(limit=1)
    quiet = timedelta(seconds=2 * settings.schedule_seconds + 300)
    if last_run and utcnow() - last_run[0].started_at > quiet:
        found.append(
            f"no step has run since {last_run[0].started_at:%Y-%m-%d %H:%M:%S} "
            f"(SENTILOOP_SCHEDULE_SECONDS={settings.schedule_seconds:g}): is beat running?"
        )
    reason = _label_studio_down(ctx)
    if reason:
        found.append(reason)
    return found


def _label_studio_down(ctx: Context) -> str | None:
    url = ctx.settings.ls_url_shown
    try:
        response = httpx.get(f"{ctx.settings.ls_url}/health", timeout=3)
    except httpx.HTTPError as exc:
        where = "local server" if ctx.settings.local_label_studio else "SENTILOOP_LABEL_STUDIO_URL"
        return f"Label Studio unreachable at {url} ({where}): {type(exc).__name__}"
    if response.status_code != 200:
        return f"Label Studio at {url} answers /health with HTTP {response.status_code}"
    return None
