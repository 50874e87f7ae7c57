"""The ``sentiloop`` command line."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.settings import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
ls_app = typer.Typer(no_args_is_help=True, help="Run the local Label Studio server.")
models_app = typer.Typer(no_args_is_help=True, help="Model versions.")
app.add_typer(ls_app, name="labelstudio")
app.add_typer(models_app, name="models")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _run(fn: Callable[[], T]) -> T:
    """Turn our typed errors into a one-line message and exit code 2 (without importing torch
    just to name the training errors: ours are recognised by their package)."""
    try:
        return fn()
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in _OUR_PACKAGES:
            raise
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


_OUR_PACKAGES = frozenset({"store", "training", "labeling", "orchestrator"})


def _store(settings: Settings) -> Any:
    from store import Store

    return Store(settings.db_url)


@app.callback()
def main_callback(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """sentiloop: an active-learning loop for customer-service sentiment."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else os.environ.get("SENTILOOP_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def init() -> None:
    """Create or upgrade the store's schema."""
    settings = _settings()
    store = _store(settings)
    _run(store.init)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"store ready at {store.safe_url}")


@app.command()
def ingest(path: Path) -> None:
    """Ingest a CSV or JSONL file of chats (columns chat_id and text; others kept as metadata)."""
    from orchestrator.context import Context
    from orchestrator.steps import ingest_file

    settings = _settings()
    ctx = Context.from_settings(settings)
    _run(ctx.store.init)
    report = _run(lambda: ingest_file(ctx, path))
    for row, reason in report.rejected[:50]:
        err.print(f"  row {row}: {reason}")
    if len(report.rejected) > 50:
        err.print(f"  ... and {len(report.rejected) - 50} more")
    extras = [f"{report.repeated} repeated ids (last row kept)"] if report.repeated else []
    if report.long_texts:
        extras.append(f"{report.long_texts} over-long (kept, truncated for the model)")
    console.print(
        f"{path.name}: {report.inserted} new, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.rejected)} rejected"
        + "".join(f", {e}" for e in extras)
    )
    if report.inserted + report.updated + report.unchanged == 0:
        err.print("[red]error:[/] no valid row in the file")
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Pool size, scored, pushed, labelled, versions and the last cycle."""
    settings = _settings()
    store = _store(settings)
    counts = _run(store.counts)
    production = store.production()
    table = Table(title="sentiloop", show_header=False)
    table.add_row("store", store.safe_url)
    table.add_row("chats in pool", str(counts["chats"]))
    table.add_row("scored by production", str(counts["scored_by_production"]))
    table.add_row("pushed to Label Studio", f"{counts['pushed']} (+{counts['pending']} pending)")
    table.add_row(
        "labelled chats", f"{counts['labelled_chats']} ({counts['annotations']} annotations)"
    )
    table.add_row("model versions", str(counts["versions"]))
    table.add_row(
        "production",
        f"v{production.number} macro-F1 {production.metrics.get('macro_f1', float('nan')):.3f}"
        if production
        else "none",
    )
    for run in reversed(store.runs(limit=5)):
        table.add_row(
            f"{run.step} ({run.trigger})",
            f"{run.status} {run.started_at:%Y-%m-%d %H:%M:%S} {_summary(run.counts)}"
            + (f" error: {run.error[:120]}" if run.error else ""),
        )
    console.print(table)


@app.command()
def cycle(
    wait: Annotated[bool, typer.Option(help="Wait for the cycle and show progress.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3600,
) -> None:
    """Run one cycle now through the worker (ingest, score, push, pull, retrain)."""
    from orchestrator.steps import new_cycle_id
    from orchestrator.tasks import cycle_chain

    cycle_id = new_cycle_id()
    try:
        result = cycle_chain(cycle_id, "manual").apply_async()
    except Exception as exc:  # kombu raises many types for an unreachable broker
        err.print(f"[red]error:[/] broker unreachable (SENTILOOP_BROKER_URL): {exc}")
        raise typer.Exit(2) from None
    console.print(f"cycle {cycle_id} queued")
    if wait:
        results = _chain_results(result)
        ok = _follow(results, timeout)
        raise typer.Exit(0 if ok else 1)


def _chain_results(last: Any) -> list[Any]:
    results = []
    node = last
    while node is not None:
        results.append(node)
        node = node.parent
    return list(reversed(results))


def _follow(results: list[Any], timeout: float) -> bool:
    """Show each step's progress from the task state until the chain ends."""
    from orchestrator.steps import STEPS

    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        rows = [bar.add_task(name, total=None, info="queued") for name in STEPS]
        for row, res in zip(rows, results, strict=False):
            while True:
                state = res.state
                if state == "PROGRESS" and isinstance(res.info, dict):
                    info = res.info
                    bar.update(row, total=info["total"], completed=info["done"], info=info["stage"])
                elif state == "SUCCESS":
                    out = res.result or {}
                    bar.update(row, total=1, completed=1, info=_summary(out))
                    break
                elif state in ("FAILURE", "REVOKED"):
                    bar.update(row, info=f"[red]{state}: {res.info}")
                    return False
                elif state == "RETRY":
                    bar.update(row, info=f"[yellow]retrying: {res.info}")
                elif state == "STARTED":
                    bar.update(row, info="running")
                if time.monotonic() > deadline:
                    bar.update(row, info="[red]timed out waiting (is a worker running?)")
                    return False
                time.sleep(0.2)
    return True


def _summary(out: dict[str, Any]) -> str:
    keep = {k: v for k, v in out.items() if k not in ("status", "cleaned", "project")}
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in keep.items())


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    pool: Annotated[str, typer.Option(help="prefork or solo.")] = "prefork",
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues.")] = None,
) -> None:
    """Run a Celery worker (models load lazily in its child processes)."""
    settings = _settings()
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "orchestrator.celery_app",
        "worker",
        "--loglevel",
        settings.log_level,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency or settings.worker_concurrency),
    ]
    if queues:
        args += ["--queues", queues]
    os.execv(sys.executable, args)


@app.command()
def beat() -> None:
    """Run Celery beat: starts a cycle every SENTILOOP_SCHEDULE_SECONDS."""
    settings = _settings()
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "orchestrator.celery_app",
            "beat",
            "--loglevel",
            settings.log_level,
        ],
    )


@ls_app.command("up")
def labelstudio_up() -> None:
    """Start the local Label Studio server (reuses a running one)."""
    settings = _settings()
    server = _server(settings)
    with console.status("starting Label Studio (the first start migrates its database, ~45 s)"):
        url = _run(server.start)
    console.print(
        f"Label Studio at {url}  user {settings.label_studio_username}  "
        f"password in {settings.label_studio_dir / 'credentials.json'}"
    )


@ls_app.command("down")
def labelstudio_down() -> None:
    """Stop the local Label Studio server."""
    stopped = _run(_server(_settings()).stop)
    console.print("stopped" if stopped else "was not running")


def _server(settings: Settings) -> Any:
    from labeling import LabelStudioServer

    if not settings.local_label_studio:
        err.print("[red]error:[/] SENTILOOP_LABEL_STUDIO_URL points to a remote server")
        raise typer.Exit(2)
    return LabelStudioServer(
        settings.label_studio_executable,
        settings.label_studio_dir,
        port=settings.label_studio_port,
        username=settings.label_studio_username,
        password=settings.ls_password,
        token=settings.ls_token,
        log_path=settings.label_studio_dir / "server.log",
    )


@models_app.command("list")
def models_list() -> None:
    """Every model version with its status and metrics."""
    store = _store(_settings())
    table = Table("version", "status", "parent", "labels", "macro-F1", "accuracy", "created")
    for v in _run(store.versions):
        table.add_row(
            f"v{v.number}",
            v.status,
            f"v{v.parent}" if v.parent else "-",
            str(v.n_train),
            _fmt(v.metrics.get("macro_f1")),
            _fmt(v.metrics.get("accuracy")),
            f"{v.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


@app.command()
def predict(texts: list[str]) -> None:
    """Classify texts with the production model."""
    from training import Scorer, predicted_labels, sentiment_score

    settings = _settings()
    production = _run(_store(settings).production)
    if production is None:
        err.print("[red]error:[/] no production model yet: run cycles until one is trained")
        raise typer.Exit(1)
    scorer = Scorer(
        production.checkpoint_path, device=settings.device, max_length=settings.max_length
    )
    probs = _run(lambda: scorer.predict_proba(texts))
    table = Table("label", "score", "negative", "neutral", "positive", "text")
    for text, label, s, p in zip(
        texts, predicted_labels(probs), sentiment_score(probs), probs, strict=True
    ):
        table.add_row(label, f"{s:.2f}", f"{p[0]:.2f}", f"{p[1]:.2f}", f"{p[2]:.2f}", text[:60])
    console.print(f"model v{production.number}")
    console.print(table)


@app.command()
def demo(
    pool: Annotated[
        Path, typer.Option(help="Labelled pool CSV (gold labels play the annotator).")
    ] = Path("../shared/data/airline/pool.csv"),
    dev: Annotated[Path, typer.Option(help="Labelled dev CSV for evaluation.")] = Path(
        "../shared/data/airline/dev.csv"
    ),
    rounds: Annotated[int, typer.Option(help="Active-learning rounds after the seed.")] = 4,
    batch: Annotated[int, typer.Option(help="Chats labelled per round.")] = 100,
    seed_size: Annotated[int, typer.Option(help="Seed labels (chosen by cold start).")] = 100,
    score_sample: Annotated[int, typer.Option(help="Chats scored per round (0 = all).")] = 2000,
    home: Annotated[Path, typer.Option(help="Data directory of the demo (wiped first).")] = Path(
        "var/demo"
    ),
) -> None:
    """Run the whole loop end to end with a simulated annotator."""
    from orchestrator.demo import run_demo

    _run(
        lambda: run_demo(
            console,
            pool=pool,
            dev=dev,
            rounds=rounds,
            batch=batch,
            seed_size=seed_size,
            score_sample=score_sample,
            home=home,
        )
    )


def main() -> None:
    app()
