"""`sentiloop labelstudio ...`, `backup` and `restore`: the installation around the loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from orchestrator.cli_common import console, err, load_or_exit, or_exit
from orchestrator.settings import Settings

ls_app = typer.Typer(no_args_is_help=True, help="Run the local Label Studio server.")


@ls_app.command("up")
def labelstudio_up() -> None:
    """Start the local Label Studio server (reuses a running one)."""
    settings = load_or_exit()
    server = _server(settings)
    with console.status("starting Label Studio (the first start migrates its database, ~45 s)"):
        url = or_exit(server.start)
    console.print(
        f"Label Studio at {url}  user {settings.label_studio_username}  "
        f"password in {settings.label_studio_dir / 'credentials.json'}"
    )


@ls_app.command("down")
def labelstudio_down() -> None:
    """Stop the local Label Studio server."""
    stopped = or_exit(_server(load_or_exit()).stop)
    console.print("stopped" if stopped else "was not running")


@ls_app.command("resync")
def labelstudio_resync() -> None:
    """After a Label Studio reset or a move to a new server: re-create the tasks not answered
    yet in the Label Studio now configured (answered tasks and every label are kept)."""
    from orchestrator import steps
    from orchestrator.context import Context

    ctx = Context.from_settings(load_or_exit())
    with console.status("re-creating the open tasks"):
        result = or_exit(lambda: steps.run_step(ctx, "push", steps.resync, trigger="resync"))
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


def backup(
    directory: Path,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a running push, pull or retrain step.")
    ] = 600,
) -> None:
    """Back up the store, its checkpoints and Label Studio into a new or empty DIRECTORY."""
    from orchestrator.backup import run_backup

    settings = load_or_exit()
    with _byte_progress() as progress:
        summary = or_exit(lambda: run_backup(settings, directory, progress=progress, wait_s=wait))
    console.print(summary.describe(), markup=False, highlight=False)


def restore(
    directory: Path,
    force: Annotated[
        bool, typer.Option(help="Replace a store that holds data (it is saved beside it first).")
    ] = False,
) -> None:
    """Restore a backup into the configured home and database (stop workers and Label
    Studio first); the migrations run afterwards."""
    from orchestrator.restore import run_restore

    settings = load_or_exit()
    with _byte_progress() as progress:
        summary = or_exit(lambda: run_restore(settings, directory, force=force, progress=progress))
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
