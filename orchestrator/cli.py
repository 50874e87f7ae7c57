"""The ``sentiloop`` command line."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from domain import LABELS, SentiloopError
from orchestrator.settings import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
ls_app = typer.Typer(no_args_is_help=True, help="Run the local Label Studio server.")
models_app = typer.Typer(no_args_is_help=True, help="Model versions.")
app.add_typer(ls_app, name="labelstudio")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (they print a table).")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")


@bench_app.command(
    "active-learning",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench_active_learning(ctx: typer.Context) -> None:
    """Strategies against random sampling on the airline data; options: --help there."""
    from benchmarks import active_learning

    raise typer.Exit(active_learning.main(list(ctx.args)))


console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _run(fn: Callable[[], T]) -> T:
    """Turn our typed errors into a one-line message and exit code 2."""
    try:
        return fn()
    except SentiloopError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


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
    from store import ingest_file

    settings = _settings()
    store = _store(settings)
    _run(store.init)
    with console.status(f"ingesting {escape(path.name)}") as spinner:
        report = _run(
            lambda: ingest_file(
                store, path, lambda rows: spinner.update(f"{escape(path.name)}: {rows:,} rows")
            )
        )
    for row, reason in report.rejected[:50]:
        err.print(f"  row {row}: {reason}", markup=False, highlight=False)
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

    settings = _settings()
    store = _store(settings)
    counts = _run(store.counts)
    found = _run(lambda: problems(Context(settings=settings, store=store)))
    if check:
        for line in found:
            err.print(f"degraded: {line}", markup=False, highlight=False)
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
def cycle(
    wait: Annotated[bool, typer.Option(help="Wait for the cycle and show progress.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3600,
) -> None:
    """Run one cycle now through the worker (ingest, score, push, pull, retrain)."""
    from orchestrator.steps import new_cycle_id
    from orchestrator.tasks import cycle_chain

    settings = _settings()
    cycle_id = new_cycle_id()
    try:
        result = cycle_chain(cycle_id, "manual").apply_async()
    except Exception as exc:  # kombu raises many types for an unreachable broker
        err.print(f"[red]error:[/] broker unreachable (SENTILOOP_BROKER_URL): {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"cycle {cycle_id} queued")
    if wait:
        results = _chain_results(result)
        ok = _follow(results, timeout, _store(settings), cycle_id)
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


def _follow(results: list[Any], timeout: float, store: Any, cycle_id: str) -> bool:
    """Show each step's progress from the task state until the chain ends; True when every
    step finished ok. A step whose worker died (its run's lease holder is gone: the message
    will never be answered on the embedded broker) ends the wait at once."""
    from orchestrator.steps import STEPS
    from orchestrator.tasks import progress_of
    from store import holder_gone

    deadline = time.monotonic() + timeout
    all_ok, next_check = True, 0.0
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
                progress = progress_of(state, res.info)
                if progress is not None:
                    stage, done, total = progress
                    bar.update(row, total=total, completed=done, info=stage)
                elif state == "SUCCESS":
                    out = res.result or {}
                    if out.get("status") == "failed":
                        all_ok = False
                        bar.update(row, info=f"[red]failed: {escape(str(out.get('error')))}")
                    else:
                        bar.update(row, total=1, completed=1, info=escape(_summary(out)))
                    break
                elif state in ("FAILURE", "REVOKED"):
                    bar.update(row, info=f"[red]{state}: {escape(str(res.info))}")
                    return False
                elif state == "RETRY":
                    bar.update(row, info=f"[yellow]retrying: {escape(str(res.info))}")
                elif state == "STARTED":
                    bar.update(row, info="running")
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 1.0
                    dead = store.dead_runs(cycle_id)
                    if dead:
                        bar.update(
                            row,
                            info=f"[red]{dead[0].step}: {holder_gone(dead[0])}; "
                            "the next cycle redoes its work",
                        )
                        return False
                if time.monotonic() > deadline:
                    bar.update(row, info="[red]timed out waiting (is a worker running?)")
                    return False
                time.sleep(0.2)
    return all_ok


def _summary(out: dict[str, Any]) -> str:
    keep = {k: v for k, v in out.items() if k not in ("status", "cleaned", "project")}
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in keep.items())


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

    settings = _settings()
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


@ls_app.command("resync")
def labelstudio_resync() -> None:
    """After a Label Studio reset or a move to a new server: re-create the tasks not answered
    yet in the Label Studio now configured (answered tasks and every label are kept)."""
    from orchestrator import steps
    from orchestrator.context import Context

    ctx = Context.from_settings(_settings())
    with console.status("re-creating the open tasks"):
        result = _run(lambda: steps.run_step(ctx, "push", steps.resync, trigger="resync"))
    if result.get("status") != "ok":
        err.print(f"not done: {result.get('reason')}", markup=False)
        raise typer.Exit(1)
    console.print(
        f"{result['recreated']} open tasks re-created in {result['to']} "
        f"(were in {result['from'] or 'an unrecorded project'}); {result['pushed']} imported",
        markup=False,
    )


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
    table = Table(
        "version", "status", "mode", "parent", "labels", "macro-F1", "accuracy", "created"
    )
    for v in _run(store.versions):
        table.add_row(
            f"v{v.number}",
            v.status + (" (files deleted)" if v.checkpoint_deleted else ""),
            v.mode,
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
    """Classify texts with the production model (calibrated probabilities)."""
    from orchestrator.context import Context
    from orchestrator.registry import predict as run_predict
    from training import predicted_labels, sentiment_score

    ctx = Context.from_settings(_settings())
    production, probs = _run(lambda: run_predict(ctx, texts))
    table = Table("label", "score", *LABELS, "text")
    rows = zip(texts, predicted_labels(probs), sentiment_score(probs), probs, strict=True)
    for text, label, s, p in rows:
        table.add_row(label, f"{s:.2f}", f"{p[0]:.2f}", f"{p[1]:.2f}", f"{p[2]:.2f}", text[:60])
    console.print(f"model v{production.number}")
    console.print(table)


@models_app.command("promote")
def models_promote(
    number: int,
    force: Annotated[bool, typer.Option(help="Promote even if the gate fails.")] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --force).")] = "",
) -> None:
    """Make version N production if it passes the gate against the current production."""
    from orchestrator.context import Context
    from orchestrator.registry import promote

    ctx = Context.from_settings(_settings())
    record, gate = _run(lambda: promote(ctx, number, force=force, reason=reason))
    if record is None:
        err.print(
            f"[red]refused:[/] v{number} fails the gate: {gate['reason']} (use --force --reason)"
        )
        raise typer.Exit(1)
    prev = f" (was v{record.previous})" if record.previous else ""
    console.print(f"v{number} is production{prev}; gate: {gate['reason']}")


@models_app.command("rollback")
def models_rollback(
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
) -> None:
    """Make the previous production version production again (each rollback goes one
    further back); pauses automatic promotion until `models resume`."""
    from orchestrator.context import Context
    from orchestrator.registry import rollback

    ctx = Context.from_settings(_settings())
    record = _run(lambda: rollback(ctx, reason=reason))
    console.print(
        f"rolled back: v{record.version} is production (was v{record.previous}); automatic "
        "promotion is paused until `sentiloop models resume`"
    )


@models_app.command("resume")
def models_resume() -> None:
    """Let the scheduler promote again after a manual rollback paused it."""
    store = _store(_settings())
    paused = _run(store.auto_promotion_paused)
    if not _run(store.resume_auto_promotion):
        console.print("automatic promotion was not paused")
        return
    console.print(
        f"automatic promotion resumed (paused by {paused.get('by') if paused else '?'}: "
        f"{paused.get('reason') if paused else '?'})",
        markup=False,
    )


@models_app.command("show")
def models_show(number: int) -> None:
    """Lineage, metrics, calibration and the gate result against production."""
    from orchestrator.context import Context
    from orchestrator.registry import card_data, gate

    ctx = Context.from_settings(_settings())
    version = _run(lambda: ctx.store.version(number))
    if version is None:
        err.print(f"[red]error:[/] no model version {number}")
        raise typer.Exit(2)
    card = card_data(ctx, version)
    labels = _lineage_labels(ctx, version.annotation_ids)
    table = Table(title=f"model v{number}", show_header=False)
    table.add_row("status", version.status)
    table.add_row("mode", f"{version.mode} ({version.train_config.get('mode_reason', '-')})")
    table.add_row("parent", f"v{version.parent}" if version.parent else "-")
    table.add_row("base model", version.base_model)
    table.add_row("created", f"{version.created_at:%Y-%m-%d %H:%M:%S}")
    table.add_row(
        "training", f"{version.train_seconds:.1f} s, seed {version.train_config.get('seed')}"
    )
    table.add_row(
        "lineage",
        f"{card['trained_on_annotations']} annotations in this run "
        f"({', '.join(f'{k} {v}' for k, v in sorted(labels.items()))}); "
        f"{card['lineage_annotations']} in its whole lineage",
    )
    table.add_row(
        "checkpoint", version.checkpoint_path + (" (deleted)" if version.checkpoint_deleted else "")
    )
    table.add_row("weights sha256", version.weights_sha256)
    m = version.metrics
    table.add_row(
        f"metrics ({m.get('eval_set', '-')})",
        f"macro-F1 {_fmt(m.get('macro_f1'))}, accuracy {_fmt(m.get('accuracy'))}",
    )
    for label, row in (m.get("per_class") or {}).items():
        table.add_row(
            f"  {label}",
            f"F1 {_fmt(row['f1'])} P {_fmt(row['precision'])} R {_fmt(row['recall'])} "
            f"n {row['support']}",
        )
    table.add_row(
        "calibration",
        f"T {version.temperature:.3f}, ECE {_fmt(m.get('ece_before'))} -> {_fmt(m.get('ece'))}",
    )
    if "test" in m:
        table.add_row(
            "test",
            f"macro-F1 {_fmt(m['test'].get('macro_f1'))}, "
            f"accuracy {_fmt(m['test'].get('accuracy'))}",
        )
    if m.get("confusion_matrix"):
        table.add_row(
            "confusion (rows true)",
            " | ".join(" ".join(f"{c:4d}" for c in row) for row in m["confusion_matrix"]),
        )
    table.add_row("gate at registration", str(version.gate.get("reason", "-")))
    production = ctx.store.production()
    if production is not None and production.number != number:
        now = _run(lambda: gate(ctx, version, production, persist=False))
        table.add_row(
            f"gate vs production v{production.number}",
            ("PASS " if now["passed"] else "FAIL ") + now["reason"],
        )
    for rec in ctx.store.promotions(limit=200):
        if rec.version == number:
            table.add_row(
                f"{rec.action}",
                f"{rec.at:%Y-%m-%d %H:%M:%S} by {rec.actor}"
                f"{' (forced)' if rec.forced else ''}: {rec.reason}",
            )
    console.print(table)


def _lineage_labels(ctx: Any, annotation_ids: list[int]) -> dict[str, int]:
    wanted = set(annotation_ids)
    counts: dict[str, int] = {}
    for e in ctx.store.training_examples():
        if e.annotation_id in wanted:
            counts[e.label] = counts.get(e.label, 0) + 1
    return counts


@models_app.command("diff")
def models_diff(a: int, b: int) -> None:
    """Two versions side by side: metrics, training config and the labels behind them."""
    from orchestrator.context import Context

    ctx = Context.from_settings(_settings())
    va, vb = ctx.store.version(a), ctx.store.version(b)
    if va is None or vb is None:
        err.print(f"[red]error:[/] no model version {a if va is None else b}")
        raise typer.Exit(2)
    table = Table("", f"v{a}", f"v{b}", "b - a", title=f"v{a} vs v{b}")
    ma, mb = va.metrics, vb.metrics

    def row(name: str, x: Any, y: Any) -> None:
        delta = (
            f"{y - x:+.3f}" if isinstance(x, (int, float)) and isinstance(y, (int, float)) else ""
        )
        table.add_row(
            name,
            _fmt(x) if isinstance(x, float) else str(x),
            _fmt(y) if isinstance(y, float) else str(y),
            delta,
        )

    row("status", va.status, vb.status)
    row("mode", va.mode, vb.mode)
    row("macro-F1", ma.get("macro_f1"), mb.get("macro_f1"))
    row("accuracy", ma.get("accuracy"), mb.get("accuracy"))
    for label in LABELS:
        row(f"F1 {label}", _f1(ma, label), _f1(mb, label))
    row("ECE", ma.get("ece"), mb.get("ece"))
    row("temperature", va.temperature, vb.temperature)
    row("train seconds", va.train_seconds, vb.train_seconds)
    for key in sorted(set(va.train_config) | set(vb.train_config)):
        x, y = va.train_config.get(key), vb.train_config.get(key)
        if x != y:
            row(f"config {key}", x, y)
    la, lb = set(ctx.store.lineage(a)), set(ctx.store.lineage(b))
    row("lineage annotations", len(la), len(lb))
    table.add_row(
        "only in one lineage", f"{len(la - lb)}", f"{len(lb - la)}", f"common {len(la & lb)}"
    )
    if ma.get("eval_fingerprint") != mb.get("eval_fingerprint"):
        table.caption = "metrics were measured on different evaluation sets"
    console.print(table)


def _f1(metrics: dict[str, Any], label: str) -> Any:
    return (metrics.get("per_class") or {}).get(label, {}).get("f1")


@app.command()
def backup(
    directory: Path,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a running push, pull or retrain step.")
    ] = 600,
) -> None:
    """Back up the store, its checkpoints and Label Studio into a new or empty DIRECTORY."""
    from orchestrator.backup import run_backup

    settings = _settings()
    with _byte_progress() as progress:
        summary = _run(lambda: run_backup(settings, directory, progress=progress, wait_s=wait))
    console.print(summary.describe(), markup=False, highlight=False)


@app.command()
def restore(
    directory: Path,
    force: Annotated[
        bool, typer.Option(help="Replace a store that holds data (it is saved beside it first).")
    ] = False,
) -> None:
    """Restore a backup into the configured home and database (stop workers and Label
    Studio first); the migrations run afterwards."""
    from orchestrator.restore import run_restore

    settings = _settings()
    with _byte_progress() as progress:
        summary = _run(lambda: run_restore(settings, directory, force=force, progress=progress))
    console.print(summary.describe(), markup=False, highlight=False)
    console.print("next: sentiloop labelstudio up, then start the workers")


@contextmanager
def _byte_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per stage of a long copy, fed with (stage, bytes done, bytes total)."""
    with Progress(
        TextColumn("{task.description:<13}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    ) as bar:
        rows: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in rows:
                rows[stage] = bar.add_task(stage, total=total or None)
            bar.update(rows[stage], total=total or None, completed=done)

        yield report


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
    _run(
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
