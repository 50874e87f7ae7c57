"""Lost, repeated and concurrent messages and a killed worker do no harm (SQLite defaults)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.loop import Loop

pytestmark = pytest.mark.integration


def _prepare(loop: Loop) -> int:
    assert loop.cli("init").returncode == 0
    assert loop.cli("ingest", str(loop.pool)).returncode == 0
    return loop.client().ensure_project(loop.env["SENTILOOP_PROJECT_TITLE"])


def test_concurrent_cycles_and_redelivered_messages_change_nothing(sqlite_loop: Loop) -> None:
    loop = sqlite_loop
    project = _prepare(loop)
    loop.start_worker(concurrency=2)

    # two `sentiloop cycle` at the same time, on a worker that runs two tasks at once
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "cycle"],
            env=loop.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    store = loop.store()
    tasks = store.tasks(project)
    ls_ids = [cid for cid, ids in loop.client().tasks_by_chat_id(project).items() for _ in ids]
    assert len(ls_ids) == len(set(ls_ids)) == len(tasks)
    assert len(tasks) in (40, 80)  # each push ran whole or was skipped while the other held it

    # re-delivering a push message of a finished cycle is a no-op
    cycle_id = store.runs(limit=50)[0].cycle_id
    again = loop.call("push", cycle_id=cycle_id)
    assert again == {"status": "skipped", "reason": "already done in this cycle"}
    assert len(store.tasks(project)) == len(tasks)

    # annotations pulled twice are counted once
    loop.annotate_open_tasks()
    pulls = [loop.call("pull") for _ in range(2)]
    assert sum(p.get("new", 0) for p in pulls) == len(tasks)
    assert store.counts()["annotations"] == len(tasks)

    # two retrains at once, then a re-delivered one: one version for these labels
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from orchestrator import tasks; import json; "
                "print(json.dumps(tasks.retrain.delay().get(timeout=600)))",
            ],
            env=loop.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [
        json.loads(p.communicate(timeout=700)[0].decode().strip().splitlines()[-1]) for p in procs
    ]
    assert sorted(r["status"] for r in results) == ["ok", "skipped"], results
    assert loop.call("retrain")["status"] == "skipped"
    assert [v.number for v in store.versions()] == [1]
    store.dispose()


def _complete_dirs(models: Path) -> list[Path]:
    if not models.exists():
        return []
    return [p for p in models.iterdir() if (p / "sentiloop.json").exists()]


def test_worker_killed_during_retraining_leaves_no_valid_looking_checkpoint(
    sqlite_loop: Loop,
) -> None:
    from training import verify_checkpoint

    loop = sqlite_loop
    loop.env["SENTILOOP_TRAIN_EPOCHS"] = "6"  # long enough to be killed in the middle
    project = _prepare(loop)
    worker = loop.start_worker()
    loop.call("push")
    loop.annotate_open_tasks()
    assert loop.call("pull")["new"] == 40

    code = (
        "from orchestrator import tasks; import time, json\n"
        "r = tasks.retrain.delay()\n"
        "while True:\n"
        "    if r.state == 'PROGRESS' and r.info['stage'] == 'train' and r.info['done'] >= 3:\n"
        "        print(json.dumps(r.info), flush=True); break\n"
        "    time.sleep(0.1)\n"
    )
    watcher = subprocess.run(
        [sys.executable, "-c", code],
        env=loop.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert watcher.returncode == 0, watcher.stderr + loop.worker_logs()
    loop.stop_workers(signal.SIGKILL)  # the worker and its child, mid-training
    assert worker.poll() is not None

    store = loop.store()
    models = Path(loop.env["SENTILOOP_HOME"]) / "models"
    assert store.versions() == []
    assert _complete_dirs(models) == []

    loop.start_worker()  # the next cycle finishes the work
    t0 = time.monotonic()
    done = loop.call("retrain")
    assert done["status"] == "ok", done
    assert time.monotonic() - t0 < 300
    versions = store.versions()
    assert [v.number for v in versions] == [1]
    assert [p.resolve() for p in _complete_dirs(models)] == [
        Path(versions[0].checkpoint_path).resolve()
    ]
    assert verify_checkpoint(Path(versions[0].checkpoint_path), versions[0].weights_sha256)
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp-")]
    assert project > 0
    store.dispose()
