"""`sentiloop doctor` on broken installations: every broken piece is named with what to do.
(The healthy case runs at the end of the whole loop, in test_loop.py, on both set-ups.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import torch

from orchestrator.settings import load_settings
from store import Store
from store.base import MIGRATIONS_DIR, migration_scripts
from tests.conftest import REPO_ROOT
from tests.installation import install
from tests.integration.conftest import free_port, redis_db
from tests.integration.loop import REDIS

pytestmark = pytest.mark.integration


def _doctor(*args: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit code and, per check, its status and the rest of its lines. Run as a user runs it,
    in its own process (with the environment the test set)."""
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    checks: dict[str, tuple[str, str]] = {}
    name = ""
    for line in result.stdout.splitlines():
        found = re.match(r"(ok|warn|fail) +([^:]+): (.*)", line)
        if found:
            name = found[2]
            checks[name] = (found[1], found[3])
        elif name:
            checks[name] = (checks[name][0], checks[name][1] + " " + line.strip())
    return result.returncode, checks


def test_doctor_names_every_broken_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = free_port()  # nothing listens there
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.setenv("SENTILOOP_BROKER_URL", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setenv("SENTILOOP_RESULT_BACKEND", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setenv("SENTILOOP_LABEL_STUDIO_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("SENTILOOP_LABEL_STUDIO_TOKEN", "not-a-token")
    monkeypatch.setenv("SENTILOOP_DEVICE", "cuda")
    monkeypatch.setenv("SENTILOOP_TEACHER_MODEL", "all-mpnet-base-v2")
    monkeypatch.setenv("SENTILOOP_CACHE_DIR", str(tmp_path / "empty-cache"))  # not fetched here
    settings = load_settings()
    install(settings).dispose()  # v3 in production, schema current
    with (settings.models_dir / "v0003" / "model.safetensors").open("ab") as weights:
        weights.write(b"bit rot")

    code, checks = _doctor()

    assert code == 1
    assert checks["store"][0] == "ok" and "current" in checks["store"][1]
    assert checks["broker"][0] == "fail" and "SENTILOOP_BROKER_URL" in checks["broker"][1]
    backend = checks["result backend"]
    assert backend[0] == "fail" and "SENTILOOP_RESULT_BACKEND" in backend[1]
    assert checks["workers"][0] == "fail" and "not checked" in checks["workers"][1]
    ls = checks["label studio"]
    assert ls[0] == "fail" and "unreachable" in ls[1] and "SENTILOOP_LABEL_STUDIO_URL" in ls[1]
    production = checks["production model"]
    assert production[0] == "fail" and "v3" in production[1] and "corrupt" in production[1]
    assert "rollback" in production[1]
    models = checks["models"]
    assert models[0] == "fail" and "SENTILOOP_TEACHER_MODEL=all-mpnet-base-v2" in models[1]
    assert "training.fetch all-mpnet-base-v2" in models[1]
    assert checks["disk"][0] == "ok"
    if not torch.cuda.is_available():
        assert checks["gpu"][0] == "fail" and "SENTILOOP_DEVICE=cuda" in checks["gpu"][1]
    assert "not-a-token" not in str(checks)


def test_doctor_on_an_old_schema_and_a_broker_nobody_consumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command
    from alembic.config import Config

    db = redis_db()
    redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.setenv("SENTILOOP_BROKER_URL", f"{REDIS}/{db}")
    monkeypatch.setenv("SENTILOOP_RESULT_BACKEND", f"{REDIS}/{db}")
    store = Store(load_settings().db_url)
    scripts = migration_scripts()
    head = scripts.get_current_head()
    assert head is not None
    previous = scripts.get_revision(head).down_revision
    assert isinstance(previous, str)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as connection:  # the store as the release before wrote it
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, previous)
    store.dispose()
    try:
        code, checks = _doctor("--timeout", "1")
    finally:
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()

    assert code == 1
    schema = checks["store"]
    assert schema[0] == "fail" and f"at schema {previous}" in schema[1] and head in schema[1]
    assert "sentiloop init" in schema[1]
    assert checks["broker"][0] == "ok" and checks["result backend"][0] == "ok"
    for queue in ("celery", "scoring"):
        worker = checks[f"worker on {queue!r}"]
        assert worker[0] == "fail" and "no worker is running" in worker[1], worker
        assert f"--queues {queue}" in worker[1]
    assert checks["production model"][0] == "fail"  # not checked: the store is not ready
