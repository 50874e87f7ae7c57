"""``sentiloop doctor``: is this installation able to run the loop, piece by piece?

Each check answers for one part (store, broker, result backend, workers on each queue, Label
Studio, the production checkpoint, the base and teacher models, disk, GPU) with what is wrong
and what to do. Nothing is written to the store, Label Studio or the checkpoints; a missing
embedded file is reported, not created. The only traffic is one ``sentiloop.ping`` message per
queue, which a worker answers (and which expires unread when none does).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from celery import Celery
from sqlalchemy.engine import make_url

from domain import SentiloopError
from orchestrator.settings import DEFAULT_QUEUE, SCORING_QUEUE, Settings

Status = Literal["ok", "warn", "fail"]
#: Free space wanted for checkpoints: this many times the production checkpoint, at least MIN.
DISK_FACTOR = 3
DISK_MIN_BYTES = 1 << 30


@dataclass(frozen=True)
class Check:
    """One part's verdict: ``fix`` says what to do when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def _sqlite_file(url: str, scheme: str = "") -> Path | None:
    """The file of an SQLite URL (``scheme`` is a Celery prefix such as ``sqla+``), else None."""
    url = url.removeprefix(scheme)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def check_store(settings: Settings) -> Check:
    from store import Store

    path = _sqlite_file(settings.db_url)
    if path is not None and not path.exists():
        return Check("store", "fail", f"no store at {path}", "run `sentiloop init`")
    store = Store(settings.db_url)
    try:
        current, head = store.schema_state()
    except SentiloopError as exc:
        return Check("store", "fail", str(exc), "start the database or fix SENTILOOP_DATABASE_URL")
    finally:
        store.dispose()
    where = store.safe_url
    if current == head:
        return Check("store", "ok", f"{where}, schema at {head} (current)")
    if current is None:
        return Check("store", "fail", f"{where} has no schema", "run `sentiloop init`")
    from store.base import migration_scripts

    try:
        known = migration_scripts().get_revision(current) is not None
    except Exception:  # alembic raises CommandError or ResolutionError for a foreign id
        known = False
    if not known:
        return Check(
            "store",
            "fail",
            f"{where} is at schema {current}, newer than this release ({head})",
            "upgrade sentiloop to the release that wrote it",
        )
    return Check(
        "store",
        "fail",
        f"{where} is at schema {current}, this release needs {head}",
        "run `sentiloop init` (it upgrades in place; `sentiloop backup` first)",
    )


def check_broker(settings: Settings) -> Check:
    path = _sqlite_file(settings.broker, "sqla+")
    if path is not None and not path.exists():
        return Check(
            "broker", "fail", f"no broker file at {path}", "start a worker: `sentiloop worker`"
        )
    shown = _shown(settings.broker)
    try:
        with _celery(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
    except Exception as exc:  # kombu raises many types for an unreachable broker
        return Check(
            "broker",
            "fail",
            f"unreachable at {shown} (SENTILOOP_BROKER_URL): {_reason(exc)}",
            "start the broker or fix SENTILOOP_BROKER_URL",
        )
    return Check("broker", "ok", shown)


def check_backend(settings: Settings) -> Check:
    path = _sqlite_file(settings.backend, "db+")
    if path is not None and not path.exists():
        return Check(
            "result backend", "fail", f"no results file at {path}", "start `sentiloop worker`"
        )
    shown = _shown(settings.backend)
    app = _celery(settings)
    try:
        app.backend.get_task_meta("sentiloop-doctor-probe")
    except Exception as exc:  # each backend raises its own client's errors
        return Check(
            "result backend",
            "fail",
            f"unreachable at {shown} (SENTILOOP_RESULT_BACKEND): {_reason(exc)}",
            "start it or fix SENTILOOP_RESULT_BACKEND",
        )
    return Check("result backend", "ok", shown)


def check_workers(settings: Settings, timeout: float, store_ok: bool = True) -> list[Check]:
    """A ping per queue, all sent at once: answered means a worker consumes that queue."""
    app = _celery(settings)
    sent = {
        queue: (
            time.monotonic(),
            app.send_task("sentiloop.ping", queue=queue, expires=timeout, retry=False),
        )
        for queue in (DEFAULT_QUEUE, SCORING_QUEUE)
    }
    checks = []
    deadline = time.monotonic() + timeout
    for queue, (started, result) in sent.items():
        name = f"worker on {queue!r}"
        try:
            result.get(timeout=max(0.1, deadline - time.monotonic()), interval=0.1)
        except Exception:  # a timeout, or the backend failing: either way no answer
            why = _no_worker(settings, queue, store_ok)
            checks.append(Check(name, "fail", f"no answer within {timeout:g} s", why))
            continue
        checks.append(Check(name, "ok", f"answered in {time.monotonic() - started:.2f} s"))
    return checks


def _no_worker(settings: Settings, queue: str, store_ok: bool) -> str:
    from store import Store

    alive = 0
    if store_ok:  # the workers' leases tell "busy" from "none"
        store = Store(settings.db_url)
        try:
            alive = len(store.live_workers())
        except SentiloopError:
            alive = 0
        finally:
            store.dispose()
    start = f"`sentiloop worker --queues {queue}`"
    if alive:
        return f"{alive} worker(s) alive but none answered: busy with long work, or start {start}"
    return f"no worker is running: start {start} (or `sentiloop worker` for both queues)"


def check_label_studio(settings: Settings) -> Check:
    from labeling import LabelingError, LabelStudioAuthError, LabelStudioClient

    if (
        settings.local_label_studio
        and not (settings.label_studio_dir / "credentials.json").exists()
    ):
        return Check(
            "label studio",
            "fail",
            "the local server was never started",
            "run `sentiloop labelstudio up`",
        )
    where = "SENTILOOP_LABEL_STUDIO_URL" if not settings.local_label_studio else "local server"
    try:
        with LabelStudioClient(
            settings.ls_url, settings.ls_token, timeout=5, max_retries=0, where=where
        ) as client:
            client.check()
    except LabelStudioAuthError as exc:
        fix = "set SENTILOOP_LABEL_STUDIO_TOKEN to an API token of a user of that server"
        if settings.local_label_studio:
            fix = "SENTILOOP_LABEL_STUDIO_TOKEN differs from the local server's own token"
        return Check("label studio", "fail", str(exc), fix)
    except LabelingError as exc:
        fix = "start it or fix SENTILOOP_LABEL_STUDIO_URL"
        if settings.local_label_studio:
            fix = "start it: `sentiloop labelstudio up`"
        return Check("label studio", "fail", str(exc), fix)
    return Check("label studio", "ok", f"{settings.ls_url_shown}, token accepted")


def check_production(settings: Settings) -> Check:
    from store import Store
    from training import CheckpointError, verify_checkpoint

    store = Store(settings.db_url)
    try:
        production = store.production()
    finally:
        store.dispose()
    if production is None:
        return Check(
            "production model",
            "warn",
            "no version in production yet",
            "the first retrain makes one (`sentiloop cycle` after the first labels)",
        )
    try:
        verify_checkpoint(Path(production.checkpoint_path), production.weights_sha256)
    except CheckpointError as exc:
        return Check(
            "production model",
            "fail",
            f"v{production.number}: {exc}",
            "`sentiloop models rollback`, or `sentiloop restore` from a backup",
        )
    return Check("production model", "ok", f"v{production.number}, checkpoint verified")


def check_disk(settings: Settings) -> Check:
    where = settings.models_dir
    while not where.exists():
        where = where.parent
    need = max(DISK_MIN_BYTES, DISK_FACTOR * _largest_version(settings.models_dir))
    free = shutil.disk_usage(where).free
    detail = f"{_gib(free)} free at {where}, a new version needs about {_gib(need)}"
    if free < need:
        return Check(
            "disk",
            "fail",
            detail,
            "free space, lower SENTILOOP_KEEP_CANDIDATES (older candidates' files are deleted) "
            "or move SENTILOOP_HOME",
        )
    return Check("disk", "ok", detail)


def _largest_version(models_dir: Path) -> int:
    sizes = [
        sum(f.stat().st_size for f in version.rglob("*") if f.is_file())
        for version in models_dir.glob("v*")
        if version.is_dir()
    ]
    return max(sizes, default=0)


def check_models(settings: Settings) -> Check:
    """The base model (and the distillation teacher) can be loaded before a retrain needs it."""
    from training import ModelLoadError, resolve_model_path

    named = [("SENTILOOP_BASE_MODEL", settings.base_model)]
    if settings.teacher_model:
        named.append(("SENTILOOP_TEACHER_MODEL", settings.teacher_model))
    found: list[str] = []
    hub: list[str] = []
    for setting, name in named:
        try:
            path = resolve_model_path(name)
        except ModelLoadError as exc:
            return Check("models", "fail", f"{setting}={name}: {exc.reason}", f"fix {setting}")
        (found if Path(path).is_dir() else hub).append(f"{setting}={name}")
    if hub:
        return Check(
            "models",
            "warn",
            f"{', '.join(hub)}: no local directory, loaded from the Hugging Face hub at first use",
            "needs network access (and HF_HUB_OFFLINE unset), or name a local checkpoint",
        )
    return Check("models", "ok", ", ".join(found) + ": installed")


def check_gpu(settings: Settings) -> Check:
    import torch

    build = f"torch {torch.__version__}"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return Check("gpu", "ok", f"{name} ({torch.cuda.device_count()} device(s), {build})")
    if settings.device.startswith("cuda"):
        return Check(
            "gpu",
            "fail",
            f"SENTILOOP_DEVICE={settings.device} but {build} sees no GPU",
            "set SENTILOOP_DEVICE=auto, or install a CUDA build of torch (`make setup` "
            "without SENTILOOP_TORCH_INDEX)",
        )
    if torch.version.cuda is None and shutil.which("nvidia-smi"):
        return Check(
            "gpu",
            "warn",
            f"an NVIDIA GPU is present but {build} is a CPU-only build",
            "rerun `make setup` without SENTILOOP_TORCH_INDEX to get the CUDA build",
        )
    return Check("gpu", "ok", f"none: scoring and training on the CPU ({build})")


def run_checks(settings: Settings, ping_timeout: float = 10.0) -> list[Check]:
    """Every check in order; one that needs a broken part says so instead of touching it
    (opening an absent SQLite store would create it)."""
    store = check_store(settings)
    checks = [store, check_broker(settings), check_backend(settings)]
    if all(c.status == "ok" for c in checks[1:]):
        checks += check_workers(settings, ping_timeout, store_ok=store.status == "ok")
    else:
        checks.append(_not_checked("workers", "the broker or the result backend"))
    checks.append(check_label_studio(settings))
    if store.status == "ok":
        checks.append(check_production(settings))
    else:
        checks.append(_not_checked("production model", "the store"))
    return [*checks, check_models(settings), check_disk(settings), check_gpu(settings)]


def _not_checked(name: str, broken: str) -> Check:
    return Check(name, "fail", f"not checked: {broken} is not ready", f"fix {broken} first")


def _celery(settings: Settings) -> Celery:
    """A bare client app: importing orchestrator.celery_app would create the home directory."""
    return Celery("sentiloop-doctor", broker=settings.broker, backend=settings.backend)


def _shown(url: str) -> str:
    from labeling import shown_url

    return shown_url(url)


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).strip().splitlines()[0][:200]


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"
