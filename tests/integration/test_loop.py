"""The whole loop through a real Celery worker process and a real Label Studio server, on the
embedded defaults (SQLite broker and store) and on Redis + PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labeling import LabelStudioClient
from tests.conftest import REPO_ROOT
from tests.integration.conftest import LabelStudioInstance

pytestmark = pytest.mark.integration

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379"


@dataclass
class Loop:
    """One configured installation: its environment, worker(s) and data."""

    env: dict[str, str]
    home: Path
    pool: Path
    gold: dict[str, str]
    ls: LabelStudioInstance
    workers: list[subprocess.Popen[bytes]]

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        )

    def start_worker(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        log = open(self.home / f"worker-{len(self.workers)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "orchestrator.celery_app", "worker",
             "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "INFO",
             "-n", f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}@%h"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            start_new_session=True,
        )
        self.workers.append(proc)
        self.call("ping", timeout=120)
        return proc

    def call(self, name: str, timeout: float = 600, **kwargs: Any) -> Any:
        """Send one task through the broker and wait for its result (from a subprocess, so
        the test process never binds to one broker configuration)."""
        code = (
            "import json, sys; from orchestrator import tasks; "
            f"r = tasks.{name}.apply_async(kwargs=json.loads(sys.argv[1])); "
            f"print(json.dumps(r.get(timeout={timeout})))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(kwargs)],
            env=self.env, capture_output=True, text=True, timeout=timeout + 30, cwd=REPO_ROOT,
        )
        assert out.returncode == 0, out.stderr[-3000:] + self.worker_logs()
        return json.loads(out.stdout.strip().splitlines()[-1])

    def worker_logs(self) -> str:
        return "".join(p.read_text(errors="replace")[-3000:] for p in self.home.glob("worker-*.log"))

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.workers.clear()

    def store(self) -> Any:
        from store import Store

        url = self.env.get("SENTILOOP_DATABASE_URL") or f"sqlite:///{self.home / 'sentiloop.db'}"
        return Store(url)

    def client(self) -> LabelStudioClient:
        return LabelStudioClient(self.ls.url, self.ls.token)

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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    name = f"sentiloop_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _make_loop(
    tmp_path: Path, airline: Path, ls: LabelStudioInstance, extra: dict[str, str]
) -> Loop:
    home = tmp_path / "home"
    home.mkdir()
    pool = tmp_path / "pool.csv"
    gold = _subset(airline / "pool.csv", pool, 400, seed=1)
    dev = tmp_path / "dev.csv"
    _subset(airline / "dev.csv", dev, 150, seed=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTILOOP_")}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "HF_HUB_OFFLINE": "1",
            "SENTILOOP_HOME": str(home),
            "SENTILOOP_LABEL_STUDIO_URL": ls.url,
            "SENTILOOP_LABEL_STUDIO_TOKEN": ls.token,
            "SENTILOOP_PROJECT_TITLE": f"test {uuid.uuid4().hex[:8]}",
            "SENTILOOP_EVAL_FILE": str(dev),
            "SENTILOOP_BATCH_SIZE": "40",
            "SENTILOOP_MIN_TRAIN_LABELS": "20",
            "SENTILOOP_TRAIN_EPOCHS": "2",
            "SENTILOOP_SCORE_SAMPLE": "150",
            "SENTILOOP_MAX_OPEN_TASKS": "1000",
            **extra,
        }
    )
    return Loop(env=env, home=home, pool=pool, gold=gold, ls=ls, workers=[])


@pytest.fixture
def sqlite_loop(tmp_path: Path, airline: Path, labelstudio: LabelStudioInstance) -> Iterator[Loop]:
    loop = _make_loop(tmp_path, airline, labelstudio, {})
    yield loop
    loop.stop_workers()


@pytest.fixture
def scaled_loop(
    tmp_path: Path, airline: Path, labelstudio: LabelStudioInstance, postgres_url: str
) -> Iterator[Loop]:
    import redis

    db = random.randint(1, 15)
    redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
    loop = _make_loop(
        tmp_path,
        airline,
        labelstudio,
        {
            "SENTILOOP_DATABASE_URL": postgres_url,
            "SENTILOOP_BROKER_URL": f"{REDIS}/{db}",
            "SENTILOOP_RESULT_BACKEND": f"{REDIS}/{db}",
        },
    )
    yield loop
    loop.stop_workers()
    redis.Redis.from_url(f"{REDIS}/{db}").flushdb()


def _ls_chat_ids(loop: Loop, project: int) -> list[str]:
    tasks = loop.client().tasks_by_chat_id(project)
    return [cid for cid, ids in tasks.items() for _ in ids]


def _run_loop(loop: Loop) -> None:
    """init -> ingest -> cycle (cold start push) -> annotate -> cycle (train v1) -> cycle
    (score with v1, push with its pre-annotations) -> annotate -> cycle (train v2)."""
    assert loop.cli("init").returncode == 0
    ingest = loop.cli("ingest", str(loop.pool))
    assert ingest.returncode == 0, ingest.stderr
    loop.start_worker()

    first = loop.cli("cycle")
    assert first.returncode == 0, first.stdout + first.stderr + loop.worker_logs()
    assert loop.annotate_open_tasks() == 40
    second = loop.cli("cycle")
    assert second.returncode == 0, second.stdout + second.stderr + loop.worker_logs()
    store = loop.store()
    versions = store.versions()
    assert [v.number for v in versions] == [1]
    assert versions[0].status == "production"
    assert versions[0].n_train == 40 and len(versions[0].annotation_ids) == 40
    assert 0.0 <= versions[0].metrics["macro_f1"] <= 1.0
    assert Path(versions[0].checkpoint_path, "sentiloop.json").is_file()

    third = loop.cli("cycle")  # scores with v1, pushes 40 chats with v1's pre-annotations
    assert third.returncode == 0, third.stdout + third.stderr + loop.worker_logs()
    project = loop.client().ensure_project(loop.env["SENTILOOP_PROJECT_TITLE"])
    tasks = store.tasks(project)
    with_model = [t for t in tasks if t.model_version == 1]
    assert len(with_model) == 40 and all(t.strategy == "entropy" for t in with_model)
    assert store.counts()["scored_by_production"] >= 40
    ls_ids = _ls_chat_ids(loop, project)
    assert len(ls_ids) == len(set(ls_ids)) == len(tasks) == 120  # no duplicate task

    assert loop.annotate_open_tasks() == 80
    fourth = loop.cli("cycle")
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr + loop.worker_logs()
    assert [v.number for v in store.versions()] == [1, 2]
    assert store.counts()["annotations"] == 120
    status = loop.cli("status")
    assert status.returncode == 0 and "labelled chats" in status.stdout
    store.dispose()


def test_loop_on_embedded_defaults(sqlite_loop: Loop) -> None:
    _run_loop(sqlite_loop)


def test_loop_on_redis_and_postgres(scaled_loop: Loop) -> None:
    _run_loop(scaled_loop)
