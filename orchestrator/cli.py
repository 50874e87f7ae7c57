"""The ``sentiloop`` command line."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from domain import LABELS
from orchestrator.cli_access import erase, operators_app
from orchestrator.cli_annotators import annotators_app
from orchestrator.cli_common import console, err, fmt, load_or_exit, open_store, or_exit
from orchestrator.cli_install import backup, ls_app, restore
from orchestrator.cli_models import models_app
from orchestrator.cli_serve import keys_app, serve

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (they print a table).")
app.add_typer(ls_app, name="labelstudio")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")
app.add_typer(operators_app, name="operators")
app.add_typer(annotators_app, name="annotators")
app.command()(erase)
app.command()(serve)
app.command()(backup)
app.command()(restore)


@bench_app.command(
    "active-learning",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench_active_learning(ctx: typer.Context) -> None:
    """Strategies against random sampling on the airline data; options: --help there."""
    try:
        from benchmarks import active_learning
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks":
            raise
        # the benchmarks and their data live in the source checkout, not in the installed wheel
        err.print(
            "the benchmarks ship with the source checkout, not with the installed package: "
            "run `make bench-active-learning` in a clone of sentiloop"
        )
        raise typer.Exit(2) from None
    raise typer.Exit(active_learning.main(list(ctx.args)))


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
    settings = load_or_exit()
    store = open_store(settings)
    or_exit(store.init)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    renamed = or_exit(lambda: _pseudonymize_annotators(settings, store))
    if renamed:
        console.print(f"{renamed} annotations now name their annotator by a pseudonymous id")
    console.print(f"store ready at {store.safe_url}")


def _pseudonymize_annotators(settings: Any, store: Any) -> int:
    """Annotations pulled before annotators had pseudonymous ids: replace their e-mails."""
    from functools import cache

    from privacy import is_pseudonym, pseudonym

    key = cache(lambda: store.pseudonym_key(settings.configured_pseudonym_key))
    return int(store.rename_annotators(is_pseudonym, lambda name: pseudonym(key(), name)))


@app.command()
def ingest(path: Path) -> None:
    """Ingest a CSV or JSONL file of chats (columns chat_id and text; others kept as metadata)."""
    from orchestrator.step_ingest import masking_at_ingest
    from store import ingest_file

    settings = load_or_exit()
    store = open_store(settings)
    or_exit(store.init)
    with console.status(f"ingesting {escape(path.name)}") as spinner:
        report = or_exit(
            lambda: ingest_file(
                store,
                path,
                lambda rows: spinner.update(f"{escape(path.name)}: {rows:,} rows"),
                masking_at_ingest(settings),
            )
        )
    for row, reason in report.rejected[:50]:
        err.print(f"  row {row}: {reason}", markup=False, highlight=False, soft_wrap=True)
    if report.n_rejected > 50:
        err.print(f"  ... and {report.n_rejected - 50} more")
    extras = [f"{report.repeated} repeated ids (last row kept)"] if report.repeated else []
    if report.long_texts:
        extras.append(f"{report.long_texts} over-long (kept, truncated for the model)")
    if report.cleaned:
        extras.append(f"{report.cleaned} with control characters removed")
    console.print(
        f"{path.name}: {report.inserted} new, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.n_rejected} rejected"
        + "".join(f", {e}" for e in extras),
        markup=False,
    )
    if report.stored == 0:
        err.print("[red]error:[/] no valid row in the file")
        raise typer.Exit(1)


@app.command()
def status(
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Only say whether the loop is degraded; exit 1 if it is (for cron)."
        ),
    ] = False,
) -> None:
    """Pool size, scored, pushed, labelled, versions, the last steps and any problem."""
    from orchestrator.context import Context
    from orchestrator.health import problems

    settings = load_or_exit()
    store = open_store(settings)
    counts = or_exit(store.counts)
    found = or_exit(lambda: problems(Context(settings=settings, store=store)))
    if check:
        for line in found:
            err.print(f"degraded: {line}", markup=False, highlight=False, soft_wrap=True)
        if not found:
            console.print("ok: the loop is healthy")
        raise typer.Exit(1 if found else 0)
    production = store.production()
    table = Table(title="sentiloop", show_header=False)
    table.add_row("store", store.safe_url)
    table.add_row("chats in pool", str(counts["chats"]))
    table.add_row("scored by production", str(counts["scored_by_production"]))
    table.add_row("pushed to Label Studio", f"{counts['pushed']} (+{counts['pending']} pending)")
    table.add_row(
        "labelled chats", f"{counts['labelled_chats']} ({counts['annotations']} annotations)"
    )
    agreed = Counter(row.state for row in store.consensus_labels().values())
    if agreed:
        table.add_row(
            "asked of several annotators",
            f"{agreed['accepted']} agreed, {agreed['reask']} waiting for one more answer, "
            f"{agreed['disputed']} disputed (`sentiloop annotators`)",
        )
    reviews = store.review_counts()
    if reviews:
        table.add_row(
            "label review",
            f"{sum(reviews.values())} likely label errors flagged: "
            f"{reviews.get('pushed', 0) + reviews.get('pending', 0)} waiting for a reviewer, "
            f"{reviews.get('annotated', 0)} answered",
        )
    table.add_row("model versions", str(counts["versions"]))
    table.add_row(
        "production",
        f"v{production.number} macro-F1 {production.metrics.get('macro_f1', float('nan')):.3f}"
        if production
        else "none",
    )
    balance = (
        f", class balance by {settings.class_balance}" if settings.class_balance != "off" else ""
    )
    table.add_row("strategy", f"{settings.strategy}{balance}, batch {settings.batch_size}")
    rounds = store.rounds(limit=1)
    if rounds:
        last = rounds[0]
        model = f"v{last.model_version}" if last.model_version else "no model"
        table.add_row(
            "last selection",
            f"{last.strategy} by {model}: {last.chosen} of {last.candidates} candidates "
            f"at {last.created_at:%Y-%m-%d %H:%M:%S}",
        )
        from orchestrator.selection import stopping_text

        table.add_row("stopping", stopping_text(last.stopping, settings.stop_when_stable))
    paused = store.auto_promotion_paused()
    if paused:
        table.add_row(
            "auto promotion",
            escape(
                f"paused by {paused.get('by')} ({paused.get('reason')}) at {paused.get('at')}: "
                "`sentiloop models resume` lets the scheduler promote again"
            ),
        )
    for line in found:
        table.add_row("[red]problem[/]", escape(line))
    for run in reversed(store.runs(limit=5)):
        table.add_row(
            f"{run.step} ({run.trigger})",
            f"{run.status} {run.started_at:%Y-%m-%d %H:%M:%S} {_summary(run.counts)}"
            + (f" error: {run.error[:120]}" if run.error else ""),
        )
    console.print(table)


@app.command()
def doctor(
    timeout: Annotated[
        float, typer.Option(help="Seconds a worker has to answer its queue's ping.")
    ] = 10,
) -> None:
    """Check this installation piece by piece; exit 1 when something is broken."""
    from orchestrator.doctor import run_checks

    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    checks = run_checks(load_or_exit(), ping_timeout=timeout)
    for check in checks:
        line = f"[{colour[check.status]}]{check.status:<4}[/] {check.name}: {escape(check.detail)}"
        if check.fix:
            line += f"\n       [dim]->[/] {escape(check.fix)}"
        console.print(line, soft_wrap=True, highlight=False)
    broken = [c.name for c in checks if c.status == "fail"]
    if broken:
        err.print(f"{len(broken)} broken: {', '.join(broken)}")
    raise typer.Exit(1 if broken else 0)


@app.command()
def cycle(
    wait: Annotated[bool, typer.Option(help="Wait for the cycle and show progress.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3600,
) -> None:
    """Run one cycle now through the worker (ingest, score, push, pull, retrain)."""
    from orchestrator.steps import new_cycle_id
    from orchestrator.tasks import cycle_chain

    settings = load_or_exit()
    cycle_id = new_cycle_id()
    try:
        result = cycle_chain(cycle_id, "manual").apply_async()
    except Exception as exc:  # kombu raises many types for an unreachable broker
        err.print(f"[red]error:[/] broker unreachable (SENTILOOP_BROKER_URL): {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"cycle {cycle_id} queued")
    if wait:
        results = _chain_results(result)
        ok = _follow(results, timeout, open_store(settings), cycle_id)
        raise typer.Exit(0 if ok else 1)


def _chain_results(last: Any) -> list[Any]:
    """One result per step, first to last; a sharded score step is followed through its
    chord's body (the shards' group is skipped)."""
    from celery.result import GroupResult

    results = []
    node = last
    while node is not None:
        if not isinstance(node, GroupResult):
            results.append(node)
        node = node.parent
    return list(reversed(results))


#: How long `sentiloop cycle` waits for a worker to appear before it says none is running.
NO_WORKER_GRACE_S = 10.0


def _follow(results: list[Any], timeout: float, store: Any, cycle_id: str) -> bool:
    """Show each step's progress from the task state until the chain ends; True when every
    step finished ok. A step whose worker died (its run's lease holder is gone: the message
    will never be answered on the embedded broker) ends the wait at once. Each failure is
    also said in one line of its own once the progress display is gone."""
    from orchestrator.steps import STEPS
    from orchestrator.tasks import progress_of
    from store import holder_gone

    deadline = time.monotonic() + timeout
    problems: list[str] = []
    next_check = 0.0
    no_worker_since: float | None = None
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        rows = [bar.add_task(name, total=None, info="queued") for name in STEPS]
        for name, row, res in zip(STEPS, rows, results, strict=False):
            problem = None
            while problem is None:
                state = res.state
                progress = progress_of(state, res.info)
                if progress is not None:
                    stage, done, total = progress
                    bar.update(row, total=total, completed=done, info=stage)
                elif state == "SUCCESS":
                    out = res.result or {}
                    if out.get("status") == "failed":
                        problems.append(f"{name} failed: {out.get('error')}")
                        bar.update(row, info="[red]failed")
                    else:
                        bar.update(row, total=1, completed=1, info=escape(_summary(out)))
                    break
                elif state in ("FAILURE", "REVOKED"):
                    problem = f"{name}: {state}: {res.info}"
                elif state == "RETRY":
                    bar.update(row, info=f"[yellow]retrying: {escape(str(res.info))}")
                elif state == "STARTED":
                    bar.update(row, info="running")
                if problem is None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + 1.0
                    dead = store.dead_runs(cycle_id)
                    if dead:
                        problem = (
                            f"{dead[0].step}: {holder_gone(dead[0])}; "
                            "the next cycle redoes its work"
                        )
                    elif state == "PENDING" and not store.live_workers():
                        no_worker_since = no_worker_since or time.monotonic()
                        if time.monotonic() - no_worker_since > NO_WORKER_GRACE_S:
                            problem = (
                                f"{name}: no worker is running (the last one died or none "
                                "was started: `sentiloop worker`); the next cycle redoes "
                                "the work"
                            )
                    else:
                        no_worker_since = None
                if problem is None and time.monotonic() > deadline:
                    problem = f"{name}: timed out waiting (is a worker running?)"
                if problem is None:
                    time.sleep(0.2)
            if problem is not None:
                bar.update(row, info="[red]stopped")
                problems.append(problem)
                break
    for line in problems:
        err.print(f"cycle {cycle_id}: {line}", markup=False, highlight=False, soft_wrap=True)
    return not problems


def _summary(out: dict[str, Any]) -> str:
    keep = {k: v for k, v in out.items() if k not in ("status", "cleaned", "project")}
    return ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in keep.items())


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    pool: Annotated[str, typer.Option(help="prefork or solo.")] = "prefork",
    queues: Annotated[
        str | None,
        typer.Option(help="Comma-separated queues (default SENTILOOP_WORKER_QUEUES)."),
    ] = None,
) -> None:
    """Run a Celery worker (models load lazily in its child processes)."""
    from orchestrator.processes import worker_command

    settings = load_or_exit()
    args = worker_command(
        concurrency=concurrency or settings.worker_concurrency,
        pool=pool,
        loglevel=settings.log_level,
        queues=queues or settings.worker_queues,
    )
    os.execv(sys.executable, args)


@app.command()
def beat() -> None:
    """Run Celery beat: starts a cycle every SENTILOOP_SCHEDULE_SECONDS."""
    settings = load_or_exit()
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


@app.command()
def predict(texts: list[str]) -> None:
    """Classify texts with the production model (calibrated probabilities)."""
    from orchestrator.context import Context
    from orchestrator.registry import predict as run_predict
    from training import predicted_labels, sentiment_score

    ctx = Context.from_settings(load_or_exit())
    production, probs = or_exit(lambda: run_predict(ctx, texts))
    table = Table("label", "score", *LABELS, "text")
    rows = zip(texts, predicted_labels(probs), sentiment_score(probs), probs, strict=True)
    for text, label, s, p in rows:
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

    # a log file gets the whole table, not one cut to 80 columns
    out = console if console.is_terminal else Console(width=140)
    or_exit(
        lambda: run_demo(
            out,
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
