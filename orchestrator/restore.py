"""``sentiloop restore DIR``: put a backup back into the configured home and database.

Every refusal comes before the first change: a backup whose files do not match their
sha256, a store that already holds data (unless ``--force``, and then the current store is
saved beside it first), a running local Label Studio, a checkpoint directory on disk that
differs from the backup's. Checkpoints are never overwritten and nothing is deleted:
what ``--force`` replaces is moved or dumped aside.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.backup import LS_DATA
from orchestrator.backup_files import (
    CHUNK,
    no_progress,
    read_manifest,
    safe_relative,
    verify_files,
)
from orchestrator.context import Progress
from orchestrator.errors import BackupError
from orchestrator.settings import Settings
from store import Store, utcnow
from store.snapshot import (
    dump_postgres,
    forget_processes,
    has_data,
    kind,
    known_revision,
    place_sqlite,
    relocate_checkpoints,
    restore_postgres,
    snapshot_sqlite,
    sqlite_file,
)

logger = logging.getLogger(__name__)


@dataclass
class RestoreSummary:
    store_kind: str
    versions: int = 0
    production: int | None = None
    checkpoints: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    label_studio: str = "nothing"
    saved_aside: list[str] = field(default_factory=list)

    def describe(self) -> str:
        production = f"v{self.production}" if self.production else "none"
        lines = [
            f"restored the {self.store_kind} store ({self.versions} versions, production "
            f"{production}), {len(self.checkpoints)} checkpoints"
            + (f" ({len(self.already_there)} already in place)" if self.already_there else ""),
            f"Label Studio: {self.label_studio}",
        ]
        lines += [f"the previous state was kept at {p}" for p in self.saved_aside]
        return "\n".join(lines)


def run_restore(
    settings: Settings, src: Path, *, force: bool = False, progress: Progress = no_progress
) -> RestoreSummary:
    """Restore the backup in ``src`` into the configured home and database."""
    try:
        return _restore(settings, src.expanduser().resolve(), force, progress)
    except OSError as exc:  # a full disk, a permission: one line, not a traceback
        raise BackupError(f"the restore from {src} failed: {exc}") from exc


def _restore(settings: Settings, src: Path, force: bool, progress: Progress) -> RestoreSummary:
    manifest = read_manifest(src)
    verify_files(src, manifest, progress)
    store = Store(settings.db_url)
    try:
        summary = RestoreSummary(kind(store))
        occupied = _refusals(settings, store, manifest, force, summary)
        if occupied:
            summary.saved_aside.append(_save_current_store(settings, store))
        store_file = src / safe_relative(str(manifest["store"]["file"]))
        if summary.store_kind == "sqlite":
            place_sqlite(store_file, store)
        else:
            restore_postgres(store_file, store)
        store.init()
        forget_processes(store)
        relocate_checkpoints(store, settings.models_dir)
        _restore_checkpoints(settings, src, manifest, summary, progress)
        _restore_label_studio(settings, src, manifest, summary, progress)
        _restore_inbox(settings, src, manifest, progress)
        summary.versions = len(store.versions())
        production = store.production()
        summary.production = production.number if production else None
    finally:
        store.dispose()
    return summary


def _refusals(
    settings: Settings,
    store: Store,
    manifest: dict[str, Any],
    force: bool,
    summary: RestoreSummary,
) -> bool:
    """Raise for anything that forbids the restore; return whether the store holds data."""
    from labeling import LabelStudioServer

    backup_kind = manifest["store"]["kind"]
    if backup_kind != summary.store_kind:
        raise BackupError(
            f"the backup holds a {backup_kind} store, but SENTILOOP_DATABASE_URL points to a "
            f"{summary.store_kind} one ({store.safe_url})"
        )
    revision = manifest.get("alembic_revision")
    if revision and not known_revision(str(revision)):
        raise BackupError(
            f"the backup's schema revision {revision} is newer than this sentiloop knows: "
            "upgrade sentiloop first"
        )
    data = settings.label_studio_dir
    server = LabelStudioServer(
        settings.label_studio_executable, data, username="", password="", token=""
    )
    if settings.local_label_studio and server.running():
        raise BackupError("the local Label Studio is running: stop it (sentiloop labelstudio down)")
    occupied = has_data(store)
    if occupied and not force:
        raise BackupError(
            f"the store at {store.safe_url} already holds chats or model versions: restore "
            "refuses to replace it (use --force: the current store is saved beside it first)"
        )
    for number, rel in _checkpoint_dirs(manifest):
        target = settings.models_dir / PurePosixPath(rel).name
        if target.exists() or target.is_symlink():
            if not _same_checkpoint(target, _sha(manifest, number)):
                raise BackupError(
                    f"{target} exists and is not the backup's v{number}: checkpoints are never "
                    "overwritten; move it away first"
                )
            summary.already_there.append(target.name)
    if (
        manifest["label_studio"].get("data")
        and settings.local_label_studio
        and data.is_dir()
        and any(data.iterdir())
        and not force
    ):
        raise BackupError(
            f"Label Studio data exists at {data}: restore refuses to replace it "
            "(use --force: it is moved aside first)"
        )
    return occupied


def _checkpoint_dirs(manifest: dict[str, Any]) -> list[tuple[int, str]]:
    return [
        (int(v["number"]), str(v["checkpoint"])) for v in manifest["versions"] if v["checkpoint"]
    ]


def _sha(manifest: dict[str, Any], number: int) -> str:
    return str(next(v["weights_sha256"] for v in manifest["versions"] if v["number"] == number))


def _same_checkpoint(path: Path, sha256: str) -> bool:
    from training import CheckpointError, verify_checkpoint

    try:
        verify_checkpoint(path, sha256)
    except CheckpointError:
        return False
    return True


def _save_current_store(settings: Settings, store: Store) -> str:
    """Keep the store that ``--force`` replaces: a SQLite copy or a pg_dump beside it."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    if kind(store) == "sqlite":
        current = sqlite_file(store)
        target = current.with_name(f"{current.name}.before-restore-{stamp}")
        snapshot_sqlite(store, target)
    else:
        settings.home_dir.mkdir(parents=True, exist_ok=True)
        target = settings.home_dir / f"before-restore-{stamp}.pgdump"
        dump_postgres(store, target)
    logger.info("the replaced store was saved at %s", target)
    return str(target)


def _files_under(manifest: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = manifest["files"]
    return {rel: entry for rel, entry in files.items() if rel.startswith(prefix + "/")}


class _Copier:
    """Copies backup files into place with their permissions, reporting bytes."""

    def __init__(self, stage: str, files: dict[str, dict[str, Any]], progress: Progress) -> None:
        self.stage, self.progress = stage, progress
        self.total = sum(int(e["size"]) for e in files.values())
        self.done = 0
        progress(stage, 0, self.total)

    def copy(self, src: Path, dest: Path, private: bool) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
        with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
            for block in iter(lambda: fin.read(CHUNK), b""):
                fout.write(block)
                self.done += len(block)
                self.progress(self.stage, self.done, self.total)
            fout.flush()
            os.fsync(fout.fileno())


def _restore_checkpoints(
    settings: Settings,
    src: Path,
    manifest: dict[str, Any],
    summary: RestoreSummary,
    progress: Progress,
) -> None:
    """Each checkpoint through a ``.tmp-`` directory renamed into place (as a save does),
    then verified against the registry's sha256; cards beside it."""
    from training import verify_checkpoint

    models = settings.models_dir
    models.mkdir(parents=True, exist_ok=True)
    copier = _Copier("checkpoints", _files_under(manifest, "models"), progress)
    for number, rel in _checkpoint_dirs(manifest):
        name = PurePosixPath(rel).name
        if name in summary.already_there:
            continue
        tmp = models / f".tmp-{name}-{uuid.uuid4().hex}"
        for file_rel, entry in _files_under(manifest, rel).items():
            inner = PurePosixPath(file_rel).relative_to(rel)
            copier.copy(src / safe_relative(file_rel), tmp / inner, bool(entry["private"]))
        os.rename(tmp, models / name)
        verify_checkpoint(models / name, _sha(manifest, number))
        summary.checkpoints.append(name)
    for file_rel, entry in _files_under(manifest, "models").items():
        path = PurePosixPath(file_rel)
        if len(path.parts) == 2 and not (models / path.name).exists():  # a model card
            copier.copy(src / safe_relative(file_rel), models / path.name, bool(entry["private"]))


def _restore_label_studio(
    settings: Settings,
    src: Path,
    manifest: dict[str, Any],
    summary: RestoreSummary,
    progress: Progress,
) -> None:
    """The local server's data directory and credentials, as a whole (a copy renamed into
    place; what it replaces is moved aside). A remote server keeps its own data."""
    info = manifest["label_studio"]
    export = " (its export is in the backup)" if info.get("export") else ""
    if not info.get("data"):
        summary.label_studio = (
            "the backup holds no local Label Studio data" if info.get("local") else "remote server"
        ) + (export or ": nothing restored")
        return
    if not settings.local_label_studio:
        summary.label_studio = (
            "the backup holds a local server's data, but SENTILOOP_LABEL_STUDIO_URL points to "
            "a remote one: not restored" + export
        )
        return
    files = _files_under(manifest, LS_DATA)
    copier = _Copier("label studio", files, progress)
    target = settings.label_studio_dir
    tmp = target.with_name(f".{target.name}-restore-{uuid.uuid4().hex}")
    for file_rel, entry in files.items():
        inner = PurePosixPath(file_rel).relative_to(LS_DATA)
        copier.copy(src / safe_relative(file_rel), tmp / inner, bool(entry["private"]))
    if target.exists():
        if any(target.iterdir()):
            aside = target.with_name(f"{target.name}.before-restore-{utcnow():%Y%m%dT%H%M%S}")
            os.rename(target, aside)
            summary.saved_aside.append(str(aside))
        else:
            target.rmdir()
    os.rename(tmp, target)
    summary.label_studio = "local data directory and credentials restored"


def _restore_inbox(
    settings: Settings, src: Path, manifest: dict[str, Any], progress: Progress
) -> None:
    """Chat files that were waiting in the inbox (a file of that name already there wins)."""
    files = _files_under(manifest, "inbox")
    copier = _Copier("inbox", files, progress)
    for file_rel, entry in files.items():
        target = settings.inbox_dir / PurePosixPath(file_rel).name
        if not target.exists():
            copier.copy(src / safe_relative(file_rel), target, bool(entry["private"]))
