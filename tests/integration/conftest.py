"""Label Studio fixtures: one migrated template per run, a fresh copy per test.

Migrating a new data dir takes ~45 s, starting a copy of a migrated one ~5 s, so each
test gets its own isolated server cheaply. Under pytest-xdist (``make test`` runs two
workers) the template and the tuned checkpoint are built once, by the first worker that
needs them, and shared.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from labeling import LabelStudioServer, copy_data_dir
from tests.conftest import airline_sample
from tests.integration import loop as loop_mod

if TYPE_CHECKING:
    from training import CheckpointInfo

LABEL_STUDIO_BIN_ENV = "SENTILOOP_LABEL_STUDIO_BIN"
TEST_USERNAME = "admin@sentiloop.local"
TEST_PASSWORD = "sentiloop-test-password"
TEST_TOKEN = "5e1f00d0c0ffee5e1f00d0c0ffee5e1f00d0c0ff"  # 40 hex chars (legacy token)


@dataclass(frozen=True)
class LabelStudioInstance:
    """A running test server and the credentials to talk to it."""

    url: str
    token: str
    server: LabelStudioServer
    data_dir: Path
    executable: Path
    username: str = TEST_USERNAME
    password: str = TEST_PASSWORD


def free_port() -> int:
    """A port that is free right now (Label Studio moves on if it gets taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_server(
    executable: Path, data_dir: Path, log_path: Path | None = None
) -> LabelStudioServer:
    return LabelStudioServer(
        executable,
        data_dir,
        port=free_port(),
        username=TEST_USERNAME,
        password=TEST_PASSWORD,
        token=TEST_TOKEN,
        log_path=log_path,
    )


@pytest.fixture(scope="session")
def labelstudio_bin() -> Path:
    """The label-studio executable; skip when not configured, fail when misconfigured."""
    value = os.environ.get(LABEL_STUDIO_BIN_ENV)
    if not value:
        pytest.skip(f"{LABEL_STUDIO_BIN_ENV} is not set (path to the label-studio executable)")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{LABEL_STUDIO_BIN_ENV}={value} is not an executable file", pytrace=False)
    return path


def redis_db() -> int:
    """A Redis database number for one test (1-15); each xdist worker draws from its own
    range, so two tests running at once never flush each other's broker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker.removeprefix("gw") or 0) % count
    width = max(1, 15 // count)
    return 1 + index * width + random.randrange(width)


@contextmanager
def built_once(factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A directory for something a whole run shares, and whether the caller must build it
    (True once per run: under xdist each worker is a session of its own, so the first to
    get here builds while the others wait on the lock, then reuse it)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield factory.mktemp(name), True
        return
    root = factory.getbasetemp().parent / name
    with (root.parent / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / ".built"
        if done.exists():
            yield root, False
            return
        root.mkdir(exist_ok=True)
        yield root, True
        done.touch()


@pytest.fixture(scope="session")
def labelstudio_template(labelstudio_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, stopped data dir holding the test user and token (created once)."""
    with built_once(tmp_path_factory, "labelstudio-template") as (root, build):
        data_dir = root / "data"
        if build:
            server = make_server(labelstudio_bin, data_dir, log_path=root / "label-studio.log")
            try:
                server.start(timeout=300)
            finally:
                server.stop()
    return data_dir


@pytest.fixture
def labelstudio(
    labelstudio_bin: Path, labelstudio_template: Path, tmp_path: Path
) -> Iterator[LabelStudioInstance]:
    """A fresh server on a free port, started from a copy of the template."""
    data_dir = tmp_path / "labelstudio-data"
    copy_data_dir(labelstudio_template, data_dir)
    server = make_server(labelstudio_bin, data_dir, log_path=tmp_path / "label-studio.log")
    url = server.start(timeout=120)
    try:
        yield LabelStudioInstance(
            url=url, token=TEST_TOKEN, server=server, data_dir=data_dir, executable=labelstudio_bin
        )
    finally:
        server.stop()


# -- a whole installation (worker, store, broker) around one Label Studio server ------------


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database for one test, dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(loop_mod.PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield loop_mod.PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with scratch_database("sentiloop_test") as url:
        yield url


@pytest.fixture
def sqlite_loop(
    tmp_path: Path, airline: Path, labelstudio: LabelStudioInstance
) -> Iterator[loop_mod.Loop]:
    loop = loop_mod.make_loop(tmp_path, airline, labelstudio, {})
    yield loop
    loop.close()


@pytest.fixture
def scaled_loop(
    tmp_path: Path, airline: Path, labelstudio: LabelStudioInstance, postgres_url: str
) -> Iterator[loop_mod.Loop]:
    import redis

    db = redis_db()
    redis.Redis.from_url(f"{loop_mod.REDIS}/{db}").flushdb()
    loop = loop_mod.make_loop(
        tmp_path,
        airline,
        labelstudio,
        {
            "SENTILOOP_DATABASE_URL": postgres_url,
            "SENTILOOP_BROKER_URL": f"{loop_mod.REDIS}/{db}",
            "SENTILOOP_RESULT_BACKEND": f"{loop_mod.REDIS}/{db}",
            "SENTILOOP_SCORE_SHARDS": "2",  # each cycle scores through a chord of shards
        },
    )
    yield loop
    loop.close()
    redis.Redis.from_url(f"{loop_mod.REDIS}/{db}").flushdb()


# -- a quickly fine-tuned checkpoint, shared by the session ----------------------------------


@pytest.fixture(scope="session")
def tuned_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> CheckpointInfo:
    """240 pool rows, 2 epochs (~20 s on 2 cores): a model whose predictions are not the
    near-ties of an untrained head."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from training import (
        DEFAULT_BASE_MODEL,
        CheckpointInfo,
        TrainConfig,
        fine_tune,
        save_checkpoint,
    )

    with built_once(tmp_path_factory, "scoring") as (root, build):
        if build:
            texts, labels = airline_sample("pool", 240, seed=1)
            model, tokenizer = fine_tune(
                DEFAULT_BASE_MODEL, texts, labels, TrainConfig(epochs=2), device="cpu"
            )
            info = save_checkpoint(model, tokenizer, root, "tuned", {})
            (root / "tuned.sha256").write_text(info.sha256)
    return CheckpointInfo(root / "tuned", (root / "tuned.sha256").read_text())
