"""Leases fence their step's writes, a repeated message never slips between "done?" and
"done", and a run whose worker died is recognised (issue #12, items 6 and 7)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from orchestrator.context import Context
from orchestrator.settings import Settings
from orchestrator.steps import run_step
from store import ChatIn, LeaseLost, Store, fenced
from store.models import Lease, utcnow
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit


def _expire(store: Store, name: str) -> None:
    with store.session() as s:
        s.exec(update(Lease).where(Lease.name == name).values(expires_at=utcnow()))  # type: ignore[arg-type]
        s.commit()


def test_a_step_whose_lease_was_taken_over_cannot_write(sqlite_store: Store) -> None:
    with sqlite_store.lease("ingest", ttl=timedelta(seconds=60)) as mine:
        with fenced(mine):
            sqlite_store.add_chats([ChatIn("1", "written while the lease is held", {}, None)])
        _expire(sqlite_store, "ingest")  # this worker stalled past its lease...
        with (
            sqlite_store.lease("ingest"),  # ...and another took the step over
            fenced(mine),
            pytest.raises(LeaseLost, match="lost its lease"),
        ):
            sqlite_store.add_chats([ChatIn("2", "a zombie's write", {}, None)])
    assert sorted(c.source_id for c in sqlite_store.chats_by_id([1, 2]).values()) == ["1"]


def test_a_repeated_message_right_after_the_lease_is_released_does_nothing(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is recorded done before its lease is released: a duplicate delivered at that
    moment finds the step done (before, it found the lease free and the step not done)."""
    ctx = Context(settings=Settings(home=tmp_path), store=sqlite_store)
    calls: list[str] = []
    duplicate: list[dict[str, Any]] = []
    real_release = sqlite_store.release

    def release_then_redeliver(name: str, owner: str) -> None:
        real_release(name, owner)
        if not calls or len(calls) > 1 or duplicate:
            return
        duplicate.append({})  # deliver once
        duplicate[0] = run_step(ctx, "push", work, cycle_id="c1")

    def work(ctx: Context, progress: Any) -> dict[str, Any]:
        calls.append("pushed a batch")
        return {"pushed": 1}

    monkeypatch.setattr(sqlite_store, "release", release_then_redeliver)
    first = run_step(ctx, "push", work, cycle_id="c1")
    assert first["status"] == "ok"
    assert duplicate == [{"status": "skipped", "reason": "already done in this cycle"}]
    assert calls == ["pushed a batch"]


def test_a_run_whose_worker_was_killed_is_recognised_at_once(sqlite_store: Store) -> None:
    code = (
        "import sys, time\n"
        "from store import Store\n"
        "store = Store(sys.argv[1])\n"
        "held = store.lease('retrain')\n"
        "lease = held.__enter__()\n"
        "store.start_run('c9', 'retrain', 'manual', owner=lease.owner)\n"
        "print('running', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, sqlite_store.url],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
        assert sqlite_store.dead_runs("c9") == []  # alive: its holder renews the lease
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        started = time.monotonic()
        dead = sqlite_store.dead_runs("c9")
        assert [r.step for r in dead] == ["retrain"]
        assert time.monotonic() - started < 5  # no waiting for the lease to expire
        assert sqlite_store.runs(cycle_id="c9")[0].status == "running"  # reading wrote nothing
        sqlite_store.reap_dead_runs()
        run = sqlite_store.runs(cycle_id="c9")[0]
        assert run.status == "died"
        assert run.error is not None and f"pid {proc.pid}" in run.error
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_run_that_finishes_while_it_is_being_checked_is_not_called_dead(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is read first, its lease next: a run that finishes in between has released
    its lease by then, which must not make it look dead."""
    with sqlite_store.lease("ingest") as lease:
        run = sqlite_store.start_run("c5", "ingest", "manual", owner=lease.owner)
    real_session = sqlite_store.session
    calls = 0

    def finish_between_the_reads() -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the running runs were read: the run finishes meanwhile
            sqlite_store.finish_run(run, "ok", {})
        return real_session()

    # the lease was released above, as a finished run's is; the run still says running
    monkeypatch.setattr(sqlite_store, "session", finish_between_the_reads)
    assert sqlite_store.dead_runs("c5") == []
