"""Annotation to production: the time from the last label an annotator submits to a new
production version answering requests, with Label Studio's webhooks and with the scheduled
cycle, side by side; and that version's test macro-F1 against a full retrain on the same labels.

The real stack: a local Label Studio, a Celery worker (2 processes), `sentiloop serve` as
the API and as Label Studio's ML backend (connected with `sentiloop labelstudio connect`).
Version 1 is trained in full on ``--labels`` pool labels; a simulated annotator submits
``--new`` labels through Label Studio's API, first with the webhook connected, then, for
the scheduled path, with it removed and a cycle started right after the last label (the best
case: a real schedule adds the wait for its next tick).

    .venv/bin/python -m benchmarks.loop_latency [--labels 2000] [--new 200] [--seed 0]

Test metrics are for reporting only: nothing is tuned on test.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "airline"
POLL_S = 0.25
#: Ids of the seeded annotations: far from the ids Label Studio gives the new ones.
SEEDED = 10_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(env: dict[str, str], *args: str, timeout: float = 900) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if out.returncode != 0:
        raise SystemExit(f"sentiloop {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _wait(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    """Poll until ``predicate`` holds; the wall-clock time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(POLL_S)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=2000, help="labels behind version 1")
    parser.add_argument("--new", type=int, default=200, help="labels the annotator submits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with pool/dev/test.csv")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="sentiloop-latency-"))
    serve_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTILOOP_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "SENTILOOP_HOME": str(home),
            "SENTILOOP_EVAL_FILE": str(args.data / "dev.csv"),
            "SENTILOOP_SEED": str(args.seed),
            "SENTILOOP_LABEL_STUDIO_PORT": str(_free_port()),
            "SENTILOOP_SERVE_PORT": str(serve_port),
            "SENTILOOP_BATCH_SIZE": str(2 * args.new),
            "SENTILOOP_MAX_OPEN_TASKS": str(4 * args.new),
        }
    )
    if "SENTILOOP_LABEL_STUDIO_BIN" in os.environ:
        env["SENTILOOP_LABEL_STUDIO_BIN"] = os.environ["SENTILOOP_LABEL_STUDIO_BIN"]
    os.environ.clear()
    os.environ.update(env)

    import httpx
    import torch

    from orchestrator import registry, steps
    from orchestrator.context import Context
    from orchestrator.processes import start_worker, stop_worker
    from orchestrator.settings import load_settings
    from serving import new_key
    from store import AnnotationIn, ChatIn

    command = ["python", "-m", "benchmarks.loop_latency", *(argv or sys.argv[1:])]
    print("# sentiloop loop latency: annotation to production")
    print(f"command: {' '.join(command)}")
    print(
        f"machine: {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
        f"cuda {torch.cuda.is_available()}, seed {args.seed}"
    )
    with (args.data / "pool.csv").open(newline="", encoding="utf-8") as fh:
        rows = list({r["chat_id"]: r for r in csv.DictReader(fh)}.values())
    rows = random.Random(args.seed).sample(rows, args.labels + 2 * args.new)
    gold = {r["chat_id"]: r["label"] for r in rows}

    ctx = Context.from_settings(load_settings())
    store = ctx.store
    store.init()
    store.add_chats([ChatIn(r["chat_id"], r["text"], {}, None) for r in rows])
    ids = store.chat_ids_by_source([r["chat_id"] for r in rows])
    now = datetime.now(UTC)
    seeded = rows[: args.labels]
    store.upsert_annotations(  # labels from an earlier Label Studio (another instance)
        0,
        [
            AnnotationIn(
                SEEDED + i, SEEDED + i, ids[r["chat_id"]], r["label"], "gold", False, now, now
            )
            for i, r in enumerate(seeded)
        ],
        "earlier",
    )

    def quiet(stage: str, done: int, total: int) -> None:
        return None

    t0 = time.monotonic()
    v1 = registry.retrain(ctx, quiet)
    print(f"v1 (full, {v1['n_train']} labels): {time.monotonic() - t0:.0f} s, promoted")
    if not v1.get("promoted"):
        store.promote(v1["version"], actor="benchmark")

    processes: list[subprocess.Popen[bytes]] = []
    try:
        _cli(env, "labelstudio", "up", timeout=300)
        processes.append(start_worker(home / "worker.log", concurrency=2, env=env))
        with (home / "serve.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "orchestrator", "serve"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
        url = f"http://127.0.0.1:{serve_port}"
        _wait("the service", lambda: _ready(httpx, url) == v1["version"], 180)
        # the tasks: scored by v1 and pushed with its pre-annotations, as the loop does
        steps.run_step(ctx, "score", steps.score)
        pushed = steps.run_step(ctx, "push", steps.push)
        print(f"pushed {pushed.get('pushed')} tasks; connecting the ML backend")
        print(_cli(env, "labelstudio", "connect").strip())
        client = ctx.labeling()
        project = client.ensure_project(ctx.settings.project_title)
        tasks = store.tasks(project, states=["pushed"])
        chats = store.chats_by_id([t.chat_id for t in tasks])
        todo = [(int(t.ls_task_id or 0), gold[chats[t.chat_id].source_id]) for t in tasks]
        key, key_hash, prefix = new_key()
        store.add_api_key("benchmark", key_hash, prefix)
        _wait("the benchmark's key", lambda: _key_ok(httpx, url, key), 30)

        def annotate(batch: list[tuple[int, str]]) -> tuple[list[int], float, float]:
            started = time.time()
            done = [client.annotate(task_id, label) for task_id, label in batch]
            return done, started, time.time()

        results: dict[str, dict[str, Any]] = {}
        # -- the webhook path -------------------------------------------------------------
        new_ids, started, last = annotate(todo[: args.new])
        results["webhook"] = _measure(httpx, store, url, new_ids, started, last, None)
        webhook_version = results["webhook"]["version"]
        results["webhook"]["predict"] = _predict_timing(httpx, url, key, [r["text"] for r in rows])
        t_ls = time.monotonic()
        from labeling import retrieve_predictions

        page = [task_id for task_id, _ in todo[2 * args.new - 30 : 2 * args.new]]
        retrieve_predictions(client, project, page)
        results["webhook"]["ls_page_s"] = time.monotonic() - t_ls
        results["webhook"]["ls_versions"] = _ls_versions(httpx, ctx, project, page)
        results["webhook"]["hook_ms"] = _webhook_times(home / "serve.log")

        # -- a full retrain on the same labels, for the macro-F1 comparison ----------------
        os.environ["SENTILOOP_RETRAIN_MODE"] = "full"
        os.environ["SENTILOOP_PROMOTE"] = "manual"
        full_ctx = Context.from_settings(load_settings())
        t0 = time.monotonic()
        full = registry.retrain(full_ctx, quiet)
        full_seconds = time.monotonic() - t0
        os.environ.pop("SENTILOOP_RETRAIN_MODE")
        os.environ.pop("SENTILOOP_PROMOTE")

        # -- the scheduled path: no webhook, a cycle right after the last label ------------
        _remove_webhooks(httpx, ctx, project, url)
        new_ids, started, last = annotate(todo[args.new : 2 * args.new])
        with (home / "cycle.log").open("wb") as log:
            cycle = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "cycle"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
            results["scheduled"] = _measure(httpx, store, url, new_ids, started, last, cycle)
            cycle.wait(timeout=900)

        test = _test_metrics(ctx, args.data / "test.csv", [webhook_version, full["version"]])
        lines = render(results, test, full_seconds, ctx.settings.schedule_seconds)
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                if proc is processes[0]:
                    stop_worker(proc)
                else:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "labelstudio", "down"],
            env=env,
            capture_output=True,
            cwd=REPO,
        )
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        header = [
            "# Loop latency: annotation to production",
            "",
            f"`{' '.join(command)}` on {os.cpu_count()} CPU cores, no GPU.",
        ]
        args.out.write_text("\n".join(header + lines) + "\n")
    shutil.rmtree(home, ignore_errors=True)
    return 0


def _ready(httpx: Any, url: str) -> int | None:
    try:
        body = httpx.get(f"{url}/readyz", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    version = body.get("model_version")
    return int(version) if version is not None else None


def _key_ok(httpx: Any, url: str, key: str) -> bool:
    r = httpx.post(f"{url}/predict", json={"tasks": []}, auth=("benchmark", key), timeout=5)
    return bool(r.status_code == 200)


def _measure(
    httpx: Any,
    store: Any,
    url: str,
    annotation_ids: list[int],
    started: float,
    last: float,
    cycle: subprocess.Popen[bytes] | None,
) -> dict[str, Any]:
    """From the last submitted label: (a) all pulled, (b) a version that learned them all
    registered, (c) it in production and answering requests."""
    wanted = set(annotation_ids)
    before = (store.newest_version().number, store.production().number)

    def examples() -> list[Any]:
        return [e for e in store.training_examples() if e.annotation_id in wanted]

    pulled_at = _wait("every label pulled", lambda: len(examples()) == len(wanted), 900)
    pulled = max(e.pulled_at for e in examples()).timestamp()
    found: dict[str, int] = {}

    def registered() -> bool:
        newest = store.newest_version()
        if newest is None or newest.number == before[0]:
            return False
        learned = store.learned(newest.number)
        if all(learned.knows(e) for e in examples()):
            found["version"] = newest.number
            return True
        return False

    registered_at = _wait("a version with every label", registered, 1200)
    version = found["version"]
    answering = _wait(
        f"v{version} in production and answering",
        lambda: _ready(httpx, url) == version,
        600,
    )
    v = store.version(version)
    retrains = [
        r
        for r in store.runs(limit=50, step="retrain")
        if r.status == "ok" and "version" in r.counts and r.counts["version"] > before[0]
    ]
    return {
        "submit_s": last - started,
        "a": max(pulled, started) - last,
        "a_polled": pulled_at - last,
        "b": registered_at - last,
        "c": answering - last,
        "version": version,
        "mode": v.mode if v else "?",
        "retrains": len(retrains),
        "status": v.status if v else "?",
        "cycle": cycle is not None,
    }


def _predict_timing(httpx: Any, url: str, key: str, texts: list[str]) -> dict[str, float]:
    from labeling import LABEL_CONFIG

    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(texts[:30])]
    body = {"tasks": tasks, "label_config": LABEL_CONFIG, "project": "1.0"}
    times = []
    with httpx.Client(auth=("benchmark", key), timeout=30) as c:
        for _ in range(21):
            t0 = time.perf_counter()
            r = c.post(f"{url}/predict", json=body)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200 and len(r.json()["results"]) == 30, r.text[:200]
    times = times[1:]  # the first pays for the connection
    return {"p50": statistics.median(times), "max": max(times)}


def _webhook_times(log: Path) -> list[float]:
    """How long the service took to answer each of Label Studio's webhook calls (its
    access log)."""
    import json

    times = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("path") == "/webhook":
                times.append(float(entry["ms"]))
    return times


def _ls_versions(httpx: Any, ctx: Any, project: int, task_ids: list[int]) -> list[str]:
    r = httpx.get(
        f"{ctx.settings.ls_url}/api/predictions/",
        params={"project": project},
        headers={"Authorization": f"Token {ctx.settings.ls_token}"},
        timeout=60,
    )
    body = r.json()
    items = body["results"] if isinstance(body, dict) else body
    wanted = set(task_ids)
    return sorted({str(p["model_version"]) for p in items if int(p["task"]) in wanted})


def _remove_webhooks(httpx: Any, ctx: Any, project: int, url: str) -> None:
    headers = {"Authorization": f"Token {ctx.settings.ls_token}"}
    base = ctx.settings.ls_url
    hooks = httpx.get(f"{base}/api/webhooks/", params={"project": project}, headers=headers)
    for hook in hooks.json():
        if str(hook.get("url", "")).startswith(url):
            httpx.delete(f"{base}/api/webhooks/{hook['id']}/", headers=headers).raise_for_status()


def _test_metrics(ctx: Any, path: Path, versions: list[int]) -> dict[int, dict[str, Any]]:
    from orchestrator.evaluation import EvalSet, _labelled_file, evaluate_checkpoint

    texts, labels = _labelled_file(ctx, path, "test file")
    data = EvalSet(texts, labels, f"file:{path.name}", frozenset())
    out = {}
    for number in versions:
        version = ctx.store.version(number)
        out[number] = evaluate_checkpoint(ctx, version, data, lambda *_: None)
    return out


def render(
    results: dict[str, dict[str, Any]],
    test: dict[int, dict[str, Any]],
    full_seconds: float,
    schedule_seconds: float,
) -> list[str]:
    hook, sched = results["webhook"], results["scheduled"]

    def s(x: float) -> str:
        return f"{x:.1f}"

    rows = [
        (
            "labels submitted through Label Studio's API (s)",
            s(hook["submit_s"]),
            s(sched["submit_s"]),
        ),
        ("(a) last label -> every label pulled (s)", s(hook["a"]), s(sched["a"])),
        (
            "(b) last label -> a version with every label registered (s)",
            s(hook["b"]),
            s(sched["b"]),
        ),
        (
            "(c) last label -> that version in production, answering (s)",
            s(hook["c"]),
            s(sched["c"]),
        ),
        (
            "the version (mode, retrains since the first label)",
            f"v{hook['version']} ({hook['mode']}, {hook['retrains']})",
            f"v{sched['version']} ({sched['mode']}, {sched['retrains']})",
        ),
        (
            "wait for the next scheduled cycle (not included above)",
            "none",
            f"up to {schedule_seconds:.0f} s (SENTILOOP_SCHEDULE_SECONDS), half on average",
        ),
    ]
    out = ["", "| | webhook path | scheduled-cycle path |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    inc_v, full_v = hook["version"], max(test)
    inc, full = test[inc_v]["macro_f1"], test[full_v]["macro_f1"]
    predict, hooks = hook["predict"], hook["hook_ms"]
    out += [
        "",
        "| test.csv | incremental (webhook path) | full retrain, same labels | difference |",
        "|---|---|---|---|",
        f"| macro-F1 | {inc:.3f} (v{inc_v}) | {full:.3f} (v{full_v}, {full_seconds:.0f} s) | "
        f"{(inc - full) * 100:+.1f} points |",
        f"| accuracy | {test[inc_v]['accuracy']:.3f} | {test[full_v]['accuracy']:.3f} | "
        f"{(test[inc_v]['accuracy'] - test[full_v]['accuracy']) * 100:+.1f} points |",
        "",
        f"/predict, a page of 30 tasks (20 calls): median {predict['p50'] * 1000:.0f} ms, "
        f"max {predict['max'] * 1000:.0f} ms; Label Studio's own 'retrieve predictions' "
        f"on 30 tasks, end to end: {hook['ls_page_s']:.2f} s, model versions now "
        f"{', '.join(hook['ls_versions'])}",
        f"webhook calls answered by the service: {len(hooks)}, median "
        f"{statistics.median(hooks) if hooks else 0:.1f} ms, max {max(hooks, default=0):.1f} ms "
        "(its access log; no training in the handler)",
        "",
        f"target (c) < 180 s with the webhook path: {hook['c']:.0f} s -> "
        f"{'met' if hook['c'] < 180 else 'missed'}",
        f"target incremental macro-F1 within 1 point of full: {(inc - full) * 100:+.1f} -> "
        f"{'met' if (full - inc) * 100 <= 1.0 else 'missed'}",
        f"target /predict for 30 tasks < 1 s: max {predict['max']:.2f} s -> "
        f"{'met' if predict['max'] < 1.0 else 'missed'}",
    ]
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
