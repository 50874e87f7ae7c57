"""Starting and stopping Celery worker processes (the demo and the tests run real ones)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from orchestrator.settings import DEFAULT_QUEUE, REPO_ROOT, SCORING_QUEUE


def worker_command(
    *,
    concurrency: int = 1,
    pool: str = "prefork",
    name: str = "sentiloop@%h",
    loglevel: str = "INFO",
    queues: str | None = None,
) -> list[str]:
    """The ``celery worker`` command line for our app; by default it consumes both queues."""
    app = [sys.executable, "-m", "celery", "-A", "orchestrator.celery_app", "worker"]
    options = ["--pool", pool, "--concurrency", str(concurrency), "--loglevel", loglevel]
    queues = queues or f"{DEFAULT_QUEUE},{SCORING_QUEUE}"
    return app + options + ["-n", name, "--queues", queues]


def start_worker(
    log_path: Path,
    *,
    concurrency: int = 1,
    name: str = "sentiloop@%h",
    env: dict[str, str] | None = None,
    queues: str | None = None,
) -> subprocess.Popen[bytes]:
    """A ``celery worker`` in its own process group, logging to ``log_path``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            worker_command(concurrency=concurrency, name=name, queues=queues),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """SIGTERM: a warm shutdown, which Celery's main process passes on to its pool children.
    SIGKILL: the whole group at once, as a crash would. Either way SIGKILL after 30 s."""
    if proc.poll() is None:
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
