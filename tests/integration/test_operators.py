"""Operators see the truth quickly: a failing push does not stop pull and retrain, and a
worker killed mid-step is reported by `sentiloop cycle` within seconds, not at its timeout
(issue #12, items 2 and 7), with real Celery workers on the embedded defaults."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.loop import Loop

pytestmark = pytest.mark.integration


def test_a_push_that_fails_every_time_does_not_stop_pull_and_retrain(sqlite_loop: Loop) -> None:
    loop = sqlite_loop
    loop.env["SENTILOOP_LABEL_STUDIO_TOKEN"] = "0" * 40  # Label Studio refuses it: permanent
    assert loop.cli("init").returncode == 0
    assert loop.cli("ingest", str(loop.pool)).returncode == 0
    loop.start_worker()
    out = loop.cli("cycle", "--timeout", "300")
    assert out.returncode == 1, out.stdout + out.stderr
    store = loop.store()
    cycle_id = store.runs(limit=1)[0].cycle_id
    steps = {r.step: r for r in store.runs(limit=20, cycle_id=cycle_id)}
    assert steps["push"].status == "failed" and "rejected the API token" in (
        steps["push"].error or ""
    )
    assert steps["pull"].status == "failed"
    assert "retrain" in steps  # the chain went on: the store decides what retrain does
    assert steps["retrain"].status == "skipped"
    store.dispose()


def _big_inbox_file(path: Path, pool: Path, rows: int) -> None:
    with pool.open(newline="", encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["chat_id", "text"])
        for i in range(rows):
            writer.writerow([f"big-{i}", texts[i % len(texts)]])
    old = time.time() - 3600
    os.utime(path, (old, old))


def test_a_worker_killed_mid_step_is_reported_within_seconds(sqlite_loop: Loop) -> None:
    loop = sqlite_loop
    loop.env["SENTILOOP_INBOX_SETTLE_SECONDS"] = "0"
    assert loop.cli("init").returncode == 0
    _big_inbox_file(loop.home / "inbox" / "export.csv", loop.pool, 150_000)  # a long ingest
    worker = loop.start_worker()
    client = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "cycle", "--timeout", "600"],
        env=loop.env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    store = loop.store()
    deadline = time.monotonic() + 120
    while not any(r.step == "ingest" and r.status == "running" for r in store.runs(limit=5)):
        assert time.monotonic() < deadline, "the ingest step never started"
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGKILL)
    killed = time.monotonic()
    worker.wait(timeout=30)
    output, _ = client.communicate(timeout=300)
    noticed = time.monotonic() - killed
    assert client.returncode == 1
    assert noticed < 30, f"`sentiloop cycle` took {noticed:.0f} s to notice"
    assert "its worker died" in " ".join(output.split()), output
    check = loop.cli("status", "--check")
    assert check.returncode == 1 and "ingest" in check.stderr and "worker died" in check.stderr
    loop.workers.clear()

    # the next worker records the dead run and a new cycle takes the file in whole
    loop.start_worker()
    again = loop.cli("cycle", "--timeout", "600")
    assert again.returncode == 0, again.stdout + again.stderr
    died = [r for r in store.runs(limit=50) if r.step == "ingest" and r.status == "died"]
    assert len(died) == 1
    assert store.counts()["chats"] == 150_000
    assert (loop.home / "inbox" / "done" / "export.csv").is_file()
    store.dispose()


def test_a_cycle_with_no_worker_alive_says_so_instead_of_waiting(sqlite_loop: Loop) -> None:
    """The chain's next message is lost with the worker that would have sent it (or no
    worker was started): `sentiloop cycle` says so within seconds, not at its timeout."""
    loop = sqlite_loop
    assert loop.cli("init").returncode == 0
    started = time.monotonic()
    out = loop.cli("cycle", "--timeout", "300")
    waited = time.monotonic() - started
    assert out.returncode == 1
    assert "no worker is running" in " ".join((out.stdout + out.stderr).split())
    assert waited < 60, f"waited {waited:.0f} s"
    check = loop.cli("status", "--check")
    assert check.returncode == 1 and "no worker is running" in check.stderr
