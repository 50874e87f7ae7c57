"""A configured sentiloop installation driven from tests: environment, workers, CLI, tasks."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeling import LabelStudioClient
from orchestrator.processes import start_worker, stop_worker
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from tests.integration.conftest import LabelStudioInstance

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379"


@dataclass
class Loop:
    """One configured installation: its environment, worker(s) and data."""

    env: dict[str, str]
    home: Path
    pool: Path
    gold: dict[str, str]
    ls: LabelStudioInstance | None
    workers: list[subprocess.Popen[bytes]]
    _client: LabelStudioClient | None = None

    def cli(
        self, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``sentiloop ARGS`` in this installation (``env`` overrides some of its settings)."""
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
        )

    def start_worker(
        self, concurrency: int = 1, queues: str | None = None
    ) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        log, name = self.home / f"worker-{n}.log", f"w{n}-{uuid.uuid4().hex[:6]}"
        proc = start_worker(
            log, concurrency=concurrency, name=f"{name}@%h", env=self.env, queues=queues
        )
        self.workers.append(proc)
        # the worker declares its queues before it says "ready": a message sent earlier races
        # it to create the queue's row in the SQLite broker (kombu's get-or-create is not atomic)
        deadline = time.monotonic() + 120
        ready = re.compile(rf"{name}@\S+ ready\.")
        while not (log.exists() and ready.search(log.read_text(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, self.worker_logs()
            time.sleep(0.2)
        self.call("ping", timeout=120, queue=(queues or "celery").split(",")[0])
        return proc

    def call(self, name: str, timeout: float = 600, queue: str | None = None, **kwargs: Any) -> Any:
        """Send one task through the broker and wait for its result (from a subprocess, so
        the test process never binds to one broker configuration)."""
        return self.run_python(
            f"r = tasks.{name}.apply_async(kwargs=kwargs, queue={queue!r})\n"
            f"result = r.get(timeout={timeout})",
            timeout=timeout,
            **kwargs,
        )

    def run_python(self, code: str, timeout: float = 600, **kwargs: Any) -> Any:
        """Run ``code`` in a subprocess with this installation's environment, ``tasks``
        imported and ``kwargs`` bound; return what it assigned to ``result``."""
        code = (
            "import json, sys\nfrom orchestrator import tasks\n"
            "kwargs = json.loads(sys.argv[1])\n"
            f"{code}\nprint(json.dumps(result))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(kwargs)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            cwd=REPO_ROOT,
        )
        assert out.returncode == 0, out.stderr[-3000:] + self.worker_logs()
        return json.loads(out.stdout.strip().splitlines()[-1])

    def worker_logs(self) -> str:
        return "".join(
            p.read_text(errors="replace")[-3000:] for p in self.home.glob("worker-*.log")
        )

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for proc in self.workers:
            stop_worker(proc, sig)
        self.workers.clear()

    def store(self) -> Any:
        from store import Store

        url = self.env.get("SENTILOOP_DATABASE_URL") or f"sqlite:///{self.home / 'sentiloop.db'}"
        return Store(url)

    def client(self) -> LabelStudioClient:
        assert self.ls is not None, "this installation has no Label Studio"
        if self._client is None:
            self._client = LabelStudioClient(self.ls.url, self.ls.token)
        return self._client

    def close(self) -> None:
        self.stop_workers()
        if self._client is not None:
            self._client.close()

    def annotate_open_tasks(self) -> int:
        from orchestrator.demo import simulate_annotator

        store = self.store()
        project = self.client().ensure_project(self.env["SENTILOOP_PROJECT_TITLE"])
        done = simulate_annotator(store, self.client(), project, self.gold)
        store.dispose()
        return done


def _subset(src: Path, dest: Path, n: int, seed: int) -> dict[str, str]:
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows = random.Random(seed).sample(rows, n)
    with dest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {r["chat_id"]: r["label"] for r in rows}


def make_loop(
    tmp_path: Path,
    airline: Path,
    ls: LabelStudioInstance | None,
    extra: dict[str, str],
    pool_size: int = 400,
) -> Loop:
    """An installation in ``tmp_path`` with ``pool_size`` pool chats; without ``ls`` it
    has no Label Studio (for tests of scoring alone)."""
    home = tmp_path / "home"
    home.mkdir()
    pool = tmp_path / "pool.csv"
    gold = _subset(airline / "pool.csv", pool, pool_size, seed=1)
    dev = tmp_path / "dev.csv"
    _subset(airline / "dev.csv", dev, 150, seed=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTILOOP_")}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "HF_HUB_OFFLINE": "1",
            "SENTILOOP_HOME": str(home),
            "SENTILOOP_PROJECT_TITLE": f"test {uuid.uuid4().hex[:8]}",
            "SENTILOOP_EVAL_FILE": str(dev),
            "SENTILOOP_BATCH_SIZE": "40",
            "SENTILOOP_MIN_TRAIN_LABELS": "20",
            "SENTILOOP_TRAIN_EPOCHS": "2",
            "SENTILOOP_TRAIN_MIN_STEPS": "0",  # a fast recipe: the tests check plumbing
            "SENTILOOP_SCORE_SAMPLE": "150",
            "SENTILOOP_MAX_OPEN_TASKS": "1000",
            **extra,
        }
    )
    if ls is not None:
        env.update({"SENTILOOP_LABEL_STUDIO_URL": ls.url, "SENTILOOP_LABEL_STUDIO_TOKEN": ls.token})
    return Loop(env=env, home=home, pool=pool, gold=gold, ls=ls, workers=[])
