"""A chaos run: cycles on the embedded defaults while workers, the cycle client and Label
Studio are killed at random moments and a simulated annotator answers, skips, edits and
answers twice. At the end it checks what must hold whatever happened, prints a summary and
exits 1 if anything was lost or duplicated.

    make chaos                     # 50 cycles (about an hour on 2 cores)
    .venv/bin/python -m tests.chaos --cycles 5 --home /tmp/chaos

Faults stop for the last ``--clean`` cycles: every one of them must complete.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
AIRLINE = REPO_ROOT.parent / "shared" / "data" / "airline"


@dataclass
class Run:
    """What happened, cycle by cycle, and what the annotator did."""

    cycles: list[tuple[int, str, int, float]] = field(default_factory=list)  # i, fault, rc, s
    actions: Counter[str] = field(default_factory=Counter)


class Installation:
    """One sentiloop home driven through its CLI, with its worker and local Label Studio."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.worker: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def must(self, *args: str) -> str:
        out = self.cli(*args)
        if out.returncode != 0:
            raise SystemExit(f"`sentiloop {' '.join(args)}` failed:\n{out.stdout}{out.stderr}")
        return out.stdout

    def start_worker(self) -> None:
        from orchestrator.processes import start_worker

        if self.worker is None or self.worker.poll() is not None:
            self.worker = start_worker(
                self.home / "worker.log", name="chaos@%h", env=self.env, concurrency=1
            )

    def kill_worker(self) -> None:
        from orchestrator.processes import stop_worker

        if self.worker is not None:
            stop_worker(self.worker, signal.SIGKILL)
            self.worker = None

    def store(self) -> Any:
        from store import Store

        return Store(f"sqlite:///{self.home / 'sentiloop.db'}")

    def client(self) -> Any:
        from labeling import LabelStudioClient

        state = json.loads((self.home / "labelstudio" / "sentiloop-server.json").read_text())
        return LabelStudioClient(str(state["url"]), self.env["SENTILOOP_LABEL_STUDIO_TOKEN"])


def annotate(inst: Installation, gold: dict[str, str], rng: random.Random, run: Run) -> None:
    """Answer, skip, answer then change one's mind, answer twice, or leave each open task."""
    store, client = inst.store(), inst.client()
    try:
        project = client.ensure_project(inst.env["SENTILOOP_PROJECT_TITLE"])
        tasks = store.tasks(project, ["pushed"])
        chats = store.chats_by_id([t.chat_id for t in tasks])
        for task in tasks:
            label = gold[chats[task.chat_id].source_id]
            other = rng.choice([x for x in ("negative", "neutral", "positive") if x != label])
            roll = rng.random()
            if task.ls_task_id is None or roll < 0.05:
                run.actions["left open"] += 1
            elif roll < 0.20:
                client.skip(task.ls_task_id)
                run.actions["skipped"] += 1
            elif roll < 0.30:
                first = client.annotate(task.ls_task_id, other)
                client.update_annotation(first, label)
                run.actions["answered, then edited"] += 1
            elif roll < 0.40:
                client.annotate(task.ls_task_id, label)
                client.annotate(task.ls_task_id, label)
                run.actions["answered twice"] += 1
            else:
                client.annotate(task.ls_task_id, label)
                run.actions["answered"] += 1
    finally:
        client.close()
        store.dispose()


def cycle(inst: Installation, rng: random.Random, faulty: bool) -> tuple[str, int]:
    """One `sentiloop cycle`, with at most one fault at a random moment."""
    fault = rng.choice(["none", "kill worker", "kill client", "stop Label Studio"])
    fault = fault if faulty else "none"
    inst.start_worker()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "cycle", "--timeout", "180"],
        env=inst.env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if fault != "none":
        time.sleep(rng.uniform(0.5, 25))
        if fault == "kill worker":
            inst.kill_worker()
        elif fault == "kill client":
            proc.send_signal(signal.SIGKILL)
        else:
            inst.must("labelstudio", "down")
            time.sleep(rng.uniform(3, 15))
            inst.must("labelstudio", "up")
    try:
        rc = proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    if fault == "kill client":  # the cycle goes on in the worker: let it finish
        time.sleep(5)
    return fault, rc


def checks(inst: Installation) -> list[tuple[str, int, bool]]:
    """(what, count, fine) for everything that must hold after the run."""
    from sqlmodel import select

    from store import Annotation
    from training import CheckpointError, Scorer, verify_checkpoint

    store, client = inst.store(), inst.client()
    project = client.ensure_project(inst.env["SENTILOOP_PROJECT_TITLE"])
    identity = client.project_identity(project)
    in_ls = {a.annotation_id for a in client.annotations_since(project, None)}
    with store.session() as s:
        rows = s.exec(
            select(Annotation.ls_annotation_id, Annotation.ls_task_id).where(
                Annotation.ls_instance == identity
            )
        )
        stored = list(rows.all())
    per_chat = client.tasks_by_chat_id(project)
    present = {t for ids in per_chat.values() for t in ids}
    stored_ids = [a for a, _ in stored]
    # a stored annotation of a task still in Label Studio that Label Studio does not have
    # was counted twice or made up (those of tasks deleted on re-queue are history)
    phantom = sum(a not in in_ls for a, task in stored if task in present)
    models = inst.home / "models"
    unverifiable = 0
    for v in store.versions():
        if v.checkpoint_deleted:
            continue
        try:
            verify_checkpoint(Path(v.checkpoint_path), v.weights_sha256)
        except CheckpointError:
            unverifiable += 1
    half_written = [
        p.name
        for p in models.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not (p / "sentiloop.json").is_file()
    ]
    production = store.production()
    loadable = False
    if production is not None:
        scorer = Scorer(production.checkpoint_path, device="cpu")
        loadable = scorer.predict_proba(["my bag never arrived"]).shape == (1, 3)
    client.close()
    store.dispose()
    lost = len(in_ls - set(stored_ids))
    duplicated = len(stored_ids) - len(set(stored_ids)) + phantom
    two_tasks = sum(len(t) > 1 for t in per_chat.values())
    return [
        ("annotations in Label Studio", len(in_ls), True),
        ("annotations lost (in Label Studio, not in the store)", lost, lost == 0),
        ("annotations duplicated (or unknown to Label Studio)", duplicated, duplicated == 0),
        ("chats with two tasks in Label Studio", two_tasks, two_tasks == 0),
        ("half-written checkpoints", len(half_written), not half_written),
        ("unverifiable checkpoints", unverifiable, unverifiable == 0),
        ("production loads and predicts", int(loadable), loadable),
    ]


def _sample(src: Path, dest: Path, n: int, seed: int) -> dict[str, str]:
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    with dest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {r["chat_id"]: r["label"] for r in rows}


def setup(home: Path, args: argparse.Namespace) -> tuple[Installation, dict[str, str]]:
    home.mkdir(parents=True, exist_ok=True)
    gold = _sample(AIRLINE / "pool.csv", home / "pool.csv", args.pool_size, args.seed)
    _sample(AIRLINE / "dev.csv", home / "dev.csv", 150, args.seed + 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTILOOP_")}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "HF_HUB_OFFLINE": "1",
            "SENTILOOP_HOME": str(home),
            "SENTILOOP_PROJECT_TITLE": "chaos",
            "SENTILOOP_EVAL_FILE": str(home / "dev.csv"),
            "SENTILOOP_BATCH_SIZE": "12",
            "SENTILOOP_MIN_TRAIN_LABELS": "10",
            "SENTILOOP_TRAIN_EPOCHS": "1",
            "SENTILOOP_TRAIN_MIN_STEPS": "0",
            "SENTILOOP_SCORE_SAMPLE": "60",
            "SENTILOOP_COLD_START_SAMPLE": "200",
            "SENTILOOP_SKIP_REQUEUE_SECONDS": "60",
            "SENTILOOP_KEEP_CANDIDATES": "2",
            "SENTILOOP_LABEL_STUDIO_PORT": str(args.port),
            "SENTILOOP_LABEL_STUDIO_TOKEN": args.token,
            "SENTILOOP_LABEL_STUDIO_PASSWORD": args.password,
        }
    )
    if os.environ.get("SENTILOOP_LABEL_STUDIO_BIN"):
        env["SENTILOOP_LABEL_STUDIO_BIN"] = os.environ["SENTILOOP_LABEL_STUDIO_BIN"]
    if args.labelstudio_template:  # a migrated data dir made with these credentials
        from labeling import copy_data_dir

        copy_data_dir(args.labelstudio_template, home / "labelstudio")
    inst = Installation(home, env)
    inst.must("init")
    inst.must("ingest", str(home / "pool.csv"))
    inst.must("labelstudio", "up")
    return inst, gold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--clean", type=int, default=3, help="last cycles without faults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=600)
    parser.add_argument("--home", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--port", type=int, default=8765, help="local Label Studio port")
    parser.add_argument("--token", default="c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05")
    parser.add_argument("--password", default="chaos-run-password")
    parser.add_argument("--labelstudio-template", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (AIRLINE / "pool.csv").is_file():
        raise SystemExit(f"airline data not found at {AIRLINE}")
    home = args.home or Path(tempfile.mkdtemp(prefix="sentiloop-chaos-"))
    rng = random.Random(args.seed)
    started = time.monotonic()
    inst, gold = setup(home, args)
    run = Run()
    try:
        for i in range(args.cycles):
            t0 = time.monotonic()
            fault, rc = cycle(inst, rng, faulty=i < args.cycles - args.clean)
            run.cycles.append((i + 1, fault, rc, time.monotonic() - t0))
            print(f"cycle {i + 1}: fault {fault}, exit {rc}, {time.monotonic() - t0:.0f} s")
            inst.start_worker()
            annotate(inst, gold, rng, run)
        inst.start_worker()
        inst.must("cycle", "--timeout", "600")  # a last pull and retrain after all faults
        results = checks(inst)
        status = inst.cli("status", "--check")
    finally:
        inst.kill_worker()
        inst.cli("labelstudio", "down")
    return report(args, home, run, results, status.stdout + status.stderr, started)


def report(
    args: argparse.Namespace,
    home: Path,
    run: Run,
    results: list[tuple[str, int, bool]],
    status: str,
    started: float,
) -> int:
    clean = [c for c in run.cycles if c[0] > args.cycles - args.clean]
    faults = Counter(f for _, f, _, _ in run.cycles)
    completed = sum(rc == 0 for *_, rc, _ in run.cycles)
    results.append(
        (
            "cycles after the faults that completed",
            sum(rc == 0 for *_, rc, _ in clean),
            all(rc == 0 for *_, rc, _ in clean),
        )
    )
    print(
        f"\nchaos run: {args.cycles} cycles, seed {args.seed}, home {home}, "
        f"{(time.monotonic() - started) / 60:.1f} min"
    )
    print(f"faults: {', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}")
    print(f"annotator: {', '.join(f'{k} {v}' for k, v in sorted(run.actions.items()))}")
    print(f"cycles completed (exit 0): {completed} of {len(run.cycles)}")
    print("\n| check | count | ok |\n|---|---|---|")
    for what, count, fine in results:
        print(f"| {what} | {count} | {'yes' if fine else 'NO'} |")
    print(f"\nstatus --check: {' '.join(status.split())[:400]}")
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)
    return 0 if all(fine for *_, fine in results) else 1


if __name__ == "__main__":
    sys.exit(main())
