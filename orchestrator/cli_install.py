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

from orchestrator.cli_common import acting, console, err, load_or_exit, open_store, or_exit
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


@ls_app.command("connect")
def labelstudio_connect(
    backend_url: Annotated[
        str | None,
        typer.Option(
            help="Where Label Studio reaches `sentiloop serve` "
            "(default http://SENTILOOP_SERVE_HOST:SENTILOOP_SERVE_PORT)."
        ),
    ] = None,
    label_studio: Annotated[
        str | None,
        typer.Option(help="A Label Studio other than the configured one (its URL)."),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Its API token (with --label-studio).", envvar=None)
    ] = None,
    project: Annotated[
        int | None, typer.Option(help="Its project id (default: this loop's project).")
    ] = None,
) -> None:
    """Connect the service's ML backend to the Label Studio project: Label Studio then asks
    the production version for predictions, and tells the loop of every annotation (a
    webhook). `sentiloop serve` must be running. With SENTILOOP_ML_BACKEND_AUTH (default on)
    a new API key named `labelstudio` is made and given to Label Studio (never shown)."""
    import time

    from labeling import LabelingError, LabelStudioClient, connect_ml_backend
    from serving import new_key

    settings = load_or_exit()
    if (label_studio is None) != (token is None):
        err.print("[red]error:[/] --label-studio and --token go together")
        raise typer.Exit(2)
    host = "127.0.0.1" if settings.serve_host in ("0.0.0.0", "::") else settings.serve_host
    url = backend_url or f"http://{host}:{settings.serve_port}"
    client = LabelStudioClient(
        label_studio or settings.ls_url,
        token or settings.ls_token,
        where="--label-studio" if label_studio else "SENTILOOP_LABEL_STUDIO_URL",
    )
    with client:
        project_id = project or or_exit(
            lambda: client.ensure_project(settings.project_title, "Chats chosen by sentiloop")
        )
        auth = None
        if settings.ml_backend_auth:
            store = open_store(settings)
            or_exit(store.init)
            admin = acting(settings, store, "keys")
            key, key_hash, prefix = new_key()
            store.revoke_api_key(BACKEND_KEY_NAME, by=admin.name)
            or_exit(lambda: store.add_api_key(BACKEND_KEY_NAME, key_hash, prefix, by=admin.name))
            auth = (BACKEND_KEY_NAME, key)
        # the service reads new keys every SENTILOOP_SERVE_POLL_SECONDS: until then, 401
        deadline = time.monotonic() + settings.serve_poll_seconds + 5
        while True:
            try:
                link = connect_ml_backend(client, project_id, url, auth=auth)
                break
            except LabelingError as exc:
                if (
                    auth is None
                    or "authentication" not in str(exc)
                    or (time.monotonic() > deadline)
                ):
                    err.print(f"[red]error:[/] {exc}", markup=False)
                    raise typer.Exit(1) from None
                time.sleep(1)
    console.print(
        f"ML backend {url} {'connected to' if link.created else 'updated on'} project "
        f"{project_id} at {client.shown} (state {link.state}, model {link.model_version}); "
        f"annotations reach the loop through {url}/webhook",
        markup=False,
    )


#: The API key `labelstudio connect` gives Label Studio (made anew at every connect).
BACKEND_KEY_NAME = "labelstudio"


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
