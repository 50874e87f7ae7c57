"""The demo: the whole loop on embedded defaults, with the pool's gold labels as the annotator."""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.errors import StepError
from orchestrator.processes import start_worker, stop_worker
from orchestrator.settings import Settings, load_settings

#: Settings that would move the demo off the embedded defaults; the demo clears them.
_EXTERNAL = (
    "SENTILOOP_DATABASE_URL",
    "SENTILOOP_BROKER_URL",
    "SENTILOOP_RESULT_BACKEND",
    "SENTILOOP_LABEL_STUDIO_URL",
    "SENTILOOP_LABEL_STUDIO_TOKEN",
)


def run_demo(
    console: Console,
    *,
    pool: Path,
    dev: Path,
    rounds: int,
    batch: int,
    seed_size: int,
    score_sample: int,
    home: Path,
) -> None:
    for path, flag in ((pool, "--pool"), (dev, "--dev")):
        if not path.is_file():
            raise StepError(f"demo data not found: {path} (pass {flag} PATH)")
    home = home.expanduser().resolve()
    _reset_home(home)
    for name in _EXTERNAL:
        os.environ.pop(name, None)
    os.environ.update(
        {
            "SENTILOOP_HOME": str(home),
            "SENTILOOP_EVAL_FILE": str(dev.resolve()),
            "SENTILOOP_BATCH_SIZE": str(batch),
            "SENTILOOP_SCORE_SAMPLE": str(score_sample),
            "SENTILOOP_MAX_OPEN_TASKS": str(max(batch, seed_size) * 2),
            "SENTILOOP_MIN_TRAIN_LABELS": str(min(20, seed_size)),
            "SENTILOOP_PROJECT_TITLE": f"sentiloop demo {time.strftime('%Y-%m-%d %H:%M:%S')}",
        }
    )
    settings = load_settings()

    from labeling import LabelStudioClient, LabelStudioServer
    from store import Store

    store = Store(settings.db_url)
    store.init()
    server = LabelStudioServer(
        settings.label_studio_executable,
        settings.label_studio_dir,
        port=settings.label_studio_port,
        username=settings.label_studio_username,
        password=settings.ls_password,
        token=settings.ls_token,
        log_path=settings.label_studio_dir / "server.log",
    )
    started = time.monotonic()
    with console.status("starting Label Studio (first start migrates its database, ~45 s)"):
        url = server.start()
    console.print(f"Label Studio up at {url} ({time.monotonic() - started:.0f} s)")
    worker = start_worker(home / "worker.log", name="demo@%h")
    try:
        from orchestrator import tasks

        with console.status("ingesting the pool through the worker"):
            t0 = time.monotonic()
            report = tasks.ingest_file.delay(str(pool.resolve())).get(timeout=600)
        console.print(
            f"ingested {pool.name}: {report['inserted']} chats, {report['rejected']} rejected, "
            f"{report['repeated']} repeated ids merged "
            f"({time.monotonic() - t0:.1f} s, worker pid {worker.pid})"
        )
        gold = _gold_labels(pool)
        client = LabelStudioClient(settings.ls_url, settings.ls_token)
        table = Table(
            "round",
            "labels",
            "version",
            "macro-F1",
            "accuracy",
            "promoted",
            "chosen by",
            "stop kappa",
            *(f"{k} s" for k in _TIMED),
            title=f"sentiloop demo: macro-F1 and accuracy on {dev.name}, seconds per step",
        )
        for rnd in range(rounds + 1):
            times: dict[str, float] = {}
            if rnd > 0:
                _step(console, times, "score", tasks.score.delay())
            limit = seed_size if rnd == 0 else batch
            pushed = _step(console, times, "push", tasks.push.delay(options={"limit": limit}))
            t0 = time.monotonic()
            simulate_annotator(store, client, int(pushed["project"]), gold)
            times["label"] = time.monotonic() - t0
            _step(console, times, "pull", tasks.pull.delay())
            trained = _step(console, times, "train", tasks.retrain.delay())
            chosen = store.rounds(limit=1)
            pairs = chosen[0].stopping.get("pairs", []) if chosen else []
            row = (
                "seed" if rnd == 0 else str(rnd),
                str(store.counts()["labelled_chats"]),
                f"v{trained.get('version', '-')}",
                _fmt(trained.get("macro_f1")),
                _fmt(trained.get("accuracy")),
                "yes" if trained.get("promoted") else "no",
                (
                    chosen[0].strategy
                    + (f" v{chosen[0].model_version}" if chosen[0].model_version else "")
                )
                if chosen
                else "-",
                _fmt(pairs[-1]["kappa"]) if pairs else "-",
                *(f"{times.get(k, 0):.1f}" for k in _TIMED),
            )
            table.add_row(*row)
            console.print(
                f"round {row[0]}: {row[1]} labels, {row[2]} macro-F1 {row[3]} accuracy {row[4]} "
                f"promoted {row[5]} (gate {escape(str(trained.get('gate', '-')))}); "
                f"batch chosen by {row[6]}, stopping kappa {row[7]} "
                f"({', '.join(f'{k} {times.get(k, 0):.1f}s' for k in _TIMED)})",
                soft_wrap=True,
            )
        console.print(table)
        from orchestrator.context import Context
        from orchestrator.selection import stopping_signal, stopping_text

        signal = stopping_signal(Context.from_settings(settings))
        console.print(f"stopping criterion: {stopping_text(signal, settings.stop_when_stable)}")
        from orchestrator.demo_serve import run_service_demo

        run_service_demo(console, settings, store)
        console.print(where_to_look(settings, url, store), soft_wrap=True)
    finally:
        stop_worker(worker)


def where_to_look(settings: Settings, url: str, store: Any) -> str:
    """The demo's closing directions: where each part lives, and where the Label Studio
    password is kept (printing it would put a secret in terminal logs)."""
    production = store.production()
    home = settings.home_dir
    return (
        "\n[bold]Where to look[/]\n"
        f"  Label Studio: {url}  (project {escape(settings.project_title)!r})\n"
        f"    user {settings.label_studio_username}  password in "
        f"{settings.label_studio_dir / 'credentials.json'} (readable by you only)\n"
        f"  store: {store.safe_url}\n"
        f"  checkpoints: {settings.models_dir}"
        + (f"  (production v{production.number})" if production else "")
        + f"\n  inspect: SENTILOOP_HOME={home} bin/sentiloop status   (also: models list, "
        "models show N)\n"
        f"  serve the production version: SENTILOOP_HOME={home} bin/sentiloop serve  "
        "(key: bin/sentiloop keys create NAME, as an admin operator)\n"
        f"  stop Label Studio: SENTILOOP_HOME={home} bin/sentiloop labelstudio down"
    )


def _reset_home(home: Path) -> None:
    """Start from an empty store but keep Label Studio's migrated data (a minute saved)."""
    home.mkdir(parents=True, exist_ok=True)
    for entry in home.iterdir():
        if entry.name == "labelstudio":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _gold_labels(pool: Path) -> dict[str, str]:
    with pool.open(newline="", encoding="utf-8") as fh:
        return {row["chat_id"]: row["label"] for row in csv.DictReader(fh)}


def simulate_annotator(store: Any, client: Any, project: int, gold: dict[str, str]) -> int:
    """The simulated annotator: answers each open task through the Label Studio API."""
    open_tasks = store.tasks(project, states=["pushed"])
    chats = store.chats_by_id([t.chat_id for t in open_tasks])
    done = 0
    for task in open_tasks:
        label = gold.get(chats[task.chat_id].source_id)
        if label and task.ls_task_id is not None:
            client.annotate(task.ls_task_id, label)
            done += 1
    return done


_TIMED = ("score", "push", "label", "pull", "train")


def _step(console: Console, times: dict[str, float], name: str, result: Any) -> Any:
    """Wait for a step's task, showing the progress it reports, and time it."""
    from orchestrator.tasks import progress_of

    t0 = time.monotonic()
    with console.status(f"{name}: queued") as status:
        while not result.ready():
            state = result.state
            progress = progress_of(state, result.info)
            if progress is not None:
                stage, done, total = progress
                status.update(f"{name}: {stage} {done}/{total}")
            else:
                status.update(f"{name}: {state.lower()}")
            time.sleep(0.25)
    times[name] = time.monotonic() - t0
    value = result.get(timeout=10)
    if value.get("status") == "skipped":
        console.print(f"  {name} skipped: {value.get('reason') or value.get('skipped')}")
    return value


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
