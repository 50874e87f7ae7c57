"""Streaming, resumable and sharded pool scoring through real Celery workers (no Label
Studio: scoring needs none). The production model is a quick fine-tune registered directly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import ModelVersion, Store
from tests.conftest import REPO_ROOT
from tests.integration import loop as loop_mod
from tests.integration.conftest import redis_db
from tests.integration.loop import Loop
from training import CheckpointInfo

pytestmark = pytest.mark.integration

POOL = 1200
#: score every chat (the loop tests cap scoring at a sample), in plain fp32
WHOLE_POOL = {"SENTILOOP_SCORE_SAMPLE": "0", "SENTILOOP_SCORE_PRECISION": "fp32"}


def _install(loop: Loop, checkpoint: CheckpointInfo) -> Store:
    """init, ingest the pool, and make ``checkpoint`` the production v1."""
    assert loop.cli("init").returncode == 0
    ingest = loop.cli("ingest", str(loop.pool))
    assert ingest.returncode == 0, ingest.stderr
    store: Store = loop.store()
    store.add_version(
        ModelVersion(
            number=1,
            base_model="test",
            checkpoint_path=str(checkpoint.path),
            weights_sha256=checkpoint.sha256,
            data_fingerprint="test-scoring",
        )
    )
    store.promote(1, actor="test", reason="scoring test")
    return store


def _predictions(store: Store) -> int:
    return int(store.counts()["scored_by_production"])


def test_killed_scoring_resumes_without_rescoring_and_a_rerun_writes_nothing(
    tmp_path: Path, airline: Path, tuned_checkpoint: CheckpointInfo
) -> None:
    loop = loop_mod.make_loop(
        tmp_path,
        airline,
        None,
        {**WHOLE_POOL, "SENTILOOP_SCORE_CHUNK": "100"},
        pool_size=POOL,
    )
    try:
        store = _install(loop, tuned_checkpoint)
        total = store.count_unscored(1)
        assert total == len(set(loop.gold)) > 1000
        loop.start_worker()
        sender = subprocess.run(
            [sys.executable, "-c", "from orchestrator import tasks; tasks.score.delay()"],
            env=loop.env,
            cwd=REPO_ROOT,
            timeout=120,
        )
        assert sender.returncode == 0
        deadline = time.monotonic() + 300
        while _predictions(store) < 300:  # three chunks written
            assert time.monotonic() < deadline, loop.worker_logs()
            time.sleep(0.05)
        loop.stop_workers(signal.SIGKILL)  # the worker and its child, mid-scoring
        done = _predictions(store)
        remaining = store.count_unscored(1)
        assert 300 <= done < total and done + remaining == total

        loop.start_worker()
        resumed = loop.call("score")
        assert resumed["status"] == "ok", resumed
        assert resumed["scored"] == resumed["written"] == remaining  # nothing scored twice
        assert _predictions(store) == total and store.count_unscored(1) == 0

        again = loop.call("score")
        assert (again["scored"], again["written"]) == (0, 0)
        assert _predictions(store) == total
        store.dispose()
    finally:
        loop.close()


@pytest.fixture
def redis_pg_env(postgres_url: str) -> Iterator[dict[str, str]]:
    import redis

    db = redis_db()
    url = f"{loop_mod.REDIS}/{db}"
    redis.Redis.from_url(url).flushdb()
    yield {
        "SENTILOOP_DATABASE_URL": postgres_url,
        "SENTILOOP_BROKER_URL": url,
        "SENTILOOP_RESULT_BACKEND": url,
    }
    redis.Redis.from_url(url).flushdb()


def test_two_workers_on_redis_split_one_pool_and_score_each_chat_once(
    tmp_path: Path,
    airline: Path,
    tuned_checkpoint: CheckpointInfo,
    redis_pg_env: dict[str, str],
) -> None:
    loop = loop_mod.make_loop(
        tmp_path,
        airline,
        None,
        {**redis_pg_env, **WHOLE_POOL, "SENTILOOP_SCORE_CHUNK": "150"},
        pool_size=POOL,
    )
    try:
        store = _install(loop, tuned_checkpoint)
        total = store.count_unscored(1)
        # two "GPU" workers that take only model work; nothing serves the default queue, so
        # a shard routed anywhere else would never run
        for _ in range(2):
            loop.start_worker(queues="scoring")
        summary = loop.run_python(
            "result = tasks.score_group(6, cycle_id='sharded').apply_async().get(timeout=600)",
            timeout=600,
        )
        assert summary["status"] == "ok", summary
        assert summary["shards"] == 6
        assert summary["scored"] == summary["written"] == total  # every chat exactly once
        assert len(summary["workers"]) == 2, summary  # both workers took shards
        assert _predictions(store) == total and store.count_unscored(1) == 0
        shard_runs = [r for r in store.runs(limit=50) if r.step.startswith("score:")]
        assert sorted(r.step for r in shard_runs) == [f"score:{i}/6" for i in range(6)]
        assert sum(int(r.counts["scored"]) for r in shard_runs) == total

        # a re-delivered shard of the same cycle is a no-op
        again = loop.call("score_shard", queue="scoring", index=0, count=6, cycle_id="sharded")
        assert again["status"] == "skipped"
        store.dispose()
    finally:
        loop.close()
