"""Cycle runs and leases: what each step did, and who may run it now."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from store.base import StoreBase
from store.errors import LeaseBusy
from store.fence import Fence
from store.models import (
    CycleRun,
    Lease,
    utcnow,
)

logger = logging.getLogger(__name__)

#: Leases named ``worker:HOST:PID`` say that a worker is alive (no step runs under them).
WORKER_LEASE_PREFIX = "worker:"


class RunStore(StoreBase):
    """Cycle runs, counts for status, and the leases that keep steps from running twice."""

    def start_run(self, cycle_id: str, step: str, trigger: str, owner: str | None = None) -> int:
        """Record a run of ``step``; ``owner`` is the lease it runs under (its holder)."""
        with self.session() as s:
            run = CycleRun(cycle_id=cycle_id, step=step, trigger=trigger, owner=owner)
            s.add(run)
            s.commit()
            s.refresh(run)
            return run.id or 0

    def finish_run(
        self, run_id: int, status: str, counts: dict[str, Any], error: str | None = None
    ) -> None:
        with self.session() as s:
            run = s.get(CycleRun, run_id)
            if run is None:
                return
            run.status, run.counts, run.error, run.finished_at = status, counts, error, utcnow()
            s.add(run)
            s.commit()

    def dead_runs(self, cycle_id: str | None = None) -> list[CycleRun]:
        """Runs recorded as running whose holder is gone: its lease is released, expired,
        taken over, or held by a process of this host that no longer exists. Read-only."""
        now, host = utcnow(), socket.gethostname()
        with self.session() as s:
            q = select(CycleRun).where(
                CycleRun.status == "running", col(CycleRun.owner).is_not(None)
            )
            if cycle_id:
                q = q.where(CycleRun.cycle_id == cycle_id)
            running = list(s.exec(q).all())
            leases = {
                lease.name: lease
                for lease in s.exec(
                    select(Lease).where(col(Lease.name).in_({r.step for r in running}))
                ).all()
            }
        suspects = []
        for run in running:
            lease = leases.get(run.step)
            alive = (
                lease is not None
                and lease.owner == run.owner
                and lease.expires_at >= now
                and not (lease.host == host and not _pid_alive(lease.pid))
            )
            if not alive:
                suspects.append(run)
        if not suspects:
            return []
        # the reads above are separate snapshots (SQLite begins none for a SELECT): a run that
        # finished in between released its lease after recording itself, so read it again
        with self.session() as s:
            still = set(
                s.exec(
                    select(CycleRun.id).where(
                        col(CycleRun.id).in_([r.id for r in suspects]),
                        CycleRun.status == "running",
                    )
                ).all()
            )
        return [r for r in suspects if r.id in still]

    def reap_dead_runs(self) -> list[CycleRun]:
        """Record the runs whose worker died as ``died`` (the next cycle redoes their work)."""
        dead = self.dead_runs()
        for run in dead:
            logger.warning("step %s of cycle %s: %s", run.step, run.cycle_id, holder_gone(run))
            with self.session() as s:
                s.exec(
                    update(CycleRun)
                    .where(col(CycleRun.id) == run.id, col(CycleRun.status) == "running")
                    .values(status="died", error=holder_gone(run), finished_at=utcnow())
                )
                s.commit()
        return dead

    def step_done(self, cycle_id: str, step: str) -> bool:
        """Whether this cycle already finished this step: a re-delivered message is a no-op."""
        with self.session() as s:
            return (
                s.exec(
                    select(CycleRun.id).where(
                        CycleRun.cycle_id == cycle_id,
                        CycleRun.step == step,
                        CycleRun.status == "ok",
                    )
                ).first()
                is not None
            )

    def runs(
        self, limit: int = 20, cycle_id: str | None = None, step: str | None = None
    ) -> list[CycleRun]:
        """Runs, newest first; of one cycle and/or one step."""
        with self.session() as s:
            q = select(CycleRun)
            if cycle_id:
                q = q.where(CycleRun.cycle_id == cycle_id)
            if step:
                q = q.where(CycleRun.step == step)
            return list(s.exec(q.order_by(col(CycleRun.id).desc()).limit(limit)).all())

    # -- leases -------------------------------------------------------------------------------

    def try_acquire(self, name: str, owner: str, ttl: timedelta) -> bool:
        """Take the named lease if free, expired, ours, or held by a dead process on this host."""
        host, pid = socket.gethostname(), os.getpid()
        now = utcnow()
        with self.session() as s:
            try:
                s.add(Lease(name=name, owner=owner, host=host, pid=pid, expires_at=now + ttl))
                s.commit()
                return True
            except IntegrityError:
                s.rollback()
            current = s.get(Lease, name)
            if current is None:
                return False
            stale = current.expires_at < now or current.owner == owner
            if not stale and current.host == host and not _pid_alive(current.pid):
                logger.warning("lease %s: holder pid %s is gone, taking over", name, current.pid)
                stale = True
            if not stale:
                return False
            result = s.exec(
                update(Lease)
                .where(col(Lease.name) == name, col(Lease.owner) == current.owner)
                .values(owner=owner, host=host, pid=pid, acquired_at=now, expires_at=now + ttl)
            )
            s.commit()
            return bool(result.rowcount == 1)

    def live_workers(self) -> list[Lease]:
        """The workers alive now: their lease (see orchestrator.celery_app) is renewed, and
        on this host their process exists."""
        now, host = utcnow(), socket.gethostname()
        return [
            lease
            for lease in self.leases()
            if lease.name.startswith(WORKER_LEASE_PREFIX)
            and lease.expires_at >= now
            and not (lease.host == host and not _pid_alive(lease.pid))
        ]

    def leases(self) -> list[Lease]:
        """Every lease held now (or expired and never released)."""
        with self.session() as s:
            return list(s.exec(select(Lease).order_by(col(Lease.name))).all())

    def renew(self, name: str, owner: str, ttl: timedelta) -> bool:
        with self.session() as s:
            result = s.exec(
                update(Lease)
                .where(col(Lease.name) == name, col(Lease.owner) == owner)
                .values(expires_at=utcnow() + ttl)
            )
            s.commit()
            return bool(result.rowcount == 1)

    def release(self, name: str, owner: str) -> None:
        with self.session() as s:
            s.exec(delete(Lease).where(col(Lease.name) == name, col(Lease.owner) == owner))
            s.commit()

    @contextmanager
    def lease(self, name: str, ttl: timedelta = timedelta(seconds=60)) -> Iterator[Fence]:
        """Hold ``name`` for the block, renewing it in the background so long steps keep it.
        Raise LeaseBusy at once if another live worker holds it. Writes made inside
        ``fence.fenced(...)`` with the returned fence commit only while it is still held."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not self.try_acquire(name, owner, ttl):
            raise LeaseBusy(f"step {name!r} is already running elsewhere")
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(ttl.total_seconds() / 4):
                try:
                    if not self.renew(name, owner, ttl):
                        logger.error("lease %s was lost: this run's writes will be refused", name)
                        return
                except Exception:  # a transient DB error must not kill the step
                    logger.exception("lease %s: renewal failed", name)

        thread = threading.Thread(target=heartbeat, name=f"lease-{name}", daemon=True)
        thread.start()
        try:
            yield Fence(name, owner, ttl, self.url)
        finally:
            stop.set()
            thread.join()
            self.release(name, owner)


def holder_gone(run: CycleRun) -> str:
    """Why a run stopped without finishing, naming the process that held it."""
    host, _, rest = (run.owner or "?:?:?").partition(":")
    pid = rest.partition(":")[0]
    return f"its worker died (pid {pid} on {host}) or lost the step's lease"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
