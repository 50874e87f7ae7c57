"""``sentiloop backup DIR``: a consistent copy of an installation.

What goes in: a snapshot of the store, the checkpoints (and model cards) of every version
it references, verified against their recorded sha256, the Label Studio project (an API
export; with the local server, also its whole data directory and credentials), the
chat files still waiting in the inbox, and a manifest listing every file with its
sha256. The steps that write to the store, Label Studio or ``models/`` together (push,
pull, retrain) are held off by taking their leases, so the store snapshot, the
checkpoints and Label Studio's tasks agree with one another.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.backup_files import (
    FORMAT,
    BackupWriter,
    no_progress,
    tree_size,
)
from orchestrator.context import Progress
from orchestrator.errors import BackupError
from orchestrator.holding import steps_held
from orchestrator.settings import Settings
from store import Store, utcnow
from store.snapshot import StoreSnapshot, dump_postgres, kind, snapshot_sqlite, sqlite_file

logger = logging.getLogger(__name__)

#: Steps whose writes must not fall between the store snapshot and the copies made after it.
HELD_STEPS = ("push", "pull", "retrain")
STORE_FILES = {"sqlite": "store/sentiloop.db", "postgresql": "store/sentiloop.pgdump"}
INBOX_SUFFIXES = (".csv", ".jsonl", ".ndjson")
LS_DATA = "labelstudio/data"
LS_EXPORT = "labelstudio/export.json"


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    store_kind: str
    revision: str | None
    versions: int
    checkpoints: int
    production: int | None
    label_studio: str

    def describe(self) -> str:
        production = f"v{self.production}" if self.production else "none"
        return (
            f"backup written to {self.path}: {self.store_kind} store (schema {self.revision}), "
            f"{self.versions} versions, {self.checkpoints} checkpoints, production {production}; "
            f"Label Studio: {self.label_studio}"
        )


def run_backup(
    settings: Settings, dest: Path, *, progress: Progress = no_progress, wait_s: float = 600
) -> BackupSummary:
    """Write a backup of the configured installation into ``dest`` (new or empty)."""
    try:
        return _backup(settings, dest.expanduser().resolve(), progress, wait_s)
    except OSError as exc:  # a full disk, a permission: one line, not a traceback
        raise BackupError(f"the backup into {dest} failed, it is incomplete: {exc}") from exc


def _backup(settings: Settings, dest: Path, progress: Progress, wait_s: float) -> BackupSummary:
    store = Store(settings.db_url)
    try:
        if kind(store) == "sqlite" and not sqlite_file(store).is_file():
            raise BackupError(f"there is no store at {store.safe_url}: nothing to back up")
        store.check()
        _prepare(dest, settings)
        writer = BackupWriter(dest, progress)
        with steps_held(store, HELD_STEPS, wait_s, BackupError):
            snap = _store(store, writer)
            copied = _checkpoints(snap, writer)
            label_studio = _label_studio(settings, writer)
            inbox = _inbox(settings, writer)
        writer.write_manifest(
            {
                "format": FORMAT,
                "created_at": utcnow().isoformat(),
                "home": str(settings.home_dir),
                "models_dir": str(settings.models_dir),
                "store": {
                    "kind": snap.kind,
                    "file": STORE_FILES[snap.kind],
                    "url": store.safe_url,
                },
                "alembic_revision": snap.revision,
                "production_version": snap.production,
                "versions": [
                    {
                        "number": v.number,
                        "status": v.status,
                        "weights_sha256": v.weights_sha256,
                        "checkpoint": copied.get(v.number),
                    }
                    for v in snap.versions
                ],
                "label_studio": label_studio,
                "inbox": inbox,
            }
        )
    finally:
        store.dispose()
    return BackupSummary(
        dest,
        snap.kind,
        snap.revision,
        len(snap.versions),
        len(copied),
        snap.production,
        _describe_ls(label_studio),
    )


def _prepare(dest: Path, settings: Settings) -> None:
    """A new or empty directory, private to its owner, outside what is being copied."""
    for inside in (settings.models_dir, settings.label_studio_dir, settings.inbox_dir):
        if dest == inside or inside in dest.parents:
            raise BackupError(f"{dest} is inside {inside}, which the backup copies")
    if dest.exists():
        if not dest.is_dir():
            raise BackupError(f"{dest} exists and is not a directory")
        if any(dest.iterdir()):
            raise BackupError(f"{dest} is not empty: back up into a new or empty directory")
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest.chmod(0o700)
    except OSError as exc:
        raise BackupError(f"cannot create the backup directory {dest}: {exc}") from exc


def _store(store: Store, writer: BackupWriter) -> StoreSnapshot:
    what = kind(store)
    if what not in STORE_FILES:
        raise BackupError(f"cannot back up a {what} store ({store.safe_url})")
    rel = STORE_FILES[what]
    writer.stage("store", 1)
    target = writer.path(rel)
    snap = snapshot_sqlite(store, target) if what == "sqlite" else dump_postgres(store, target)
    writer.record(rel, private=True)
    writer.advance(1)
    return snap


def _checkpoints(snap: StoreSnapshot, writer: BackupWriter) -> dict[int, str]:
    """Copy every checkpoint the snapshot references (not deleted by retention) with its
    model cards, and verify each copy against the sha256 the registry recorded."""
    from training import CheckpointError, verify_checkpoint

    kept = [v for v in snap.versions if not v.checkpoint_deleted]
    for v in kept:
        if not Path(v.checkpoint_path).is_dir():
            raise BackupError(
                f"v{v.number}'s checkpoint {v.checkpoint_path} is missing, "
                "although the store references it"
            )
    writer.stage("checkpoints", sum(tree_size(Path(v.checkpoint_path)) for v in kept))
    copied: dict[int, str] = {}
    for v in kept:
        src = Path(v.checkpoint_path)
        rel = f"models/{src.name}"
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            writer.copy(path, f"{rel}/{path.relative_to(src).as_posix()}")
        for suffix in (".card.json", ".card.md"):
            card = src.with_name(src.name + suffix)
            if card.is_file():
                writer.copy(card, f"models/{card.name}")
        try:
            verify_checkpoint(writer.root / rel, v.weights_sha256)
        except CheckpointError as exc:
            raise BackupError(f"v{v.number}'s checkpoint failed verification: {exc}") from exc
        copied[v.number] = rel
    return copied


def _label_studio(settings: Settings, writer: BackupWriter) -> dict[str, Any]:
    """The project's API export and, for the local server, a consistent copy of its data
    directory (database, media, credentials; not its pid record or logs)."""
    from labeling import STATE_FILE, LabelingError, LabelStudioClient, LabelStudioServer

    info: dict[str, Any] = {
        "local": settings.local_label_studio,
        "project_title": settings.project_title,
        "data": None,
        "export": None,
    }
    if settings.local_label_studio:
        data = settings.label_studio_dir
        if not data.is_dir() or not any(data.iterdir()):
            info["note"] = "no local Label Studio data"
            return info
        writer.stage("label studio", tree_size(data))
        writer.copy_tree(
            data,
            LS_DATA,
            skip=lambda p: p.name == STATE_FILE or p.suffix == ".log",
        )
        info["data"] = LS_DATA
        server = LabelStudioServer(
            settings.label_studio_executable, data, username="", password="", token=""
        )
        if not server.running():
            info["note"] = "Label Studio was not running: its data directory holds everything"
            return info
    try:
        with LabelStudioClient(settings.ls_url, settings.ls_token) as client:
            project = client.find_project(settings.project_title)
            if project is None:
                info["note"] = "Label Studio has no project of this installation yet"
                return info
            with writer.create(LS_EXPORT, private=True) as fh:
                client.export_project(project, fh)
    except LabelingError as exc:
        raise BackupError(
            f"the Label Studio export failed, the backup is incomplete: {exc}"
        ) from exc
    tasks = json.loads((writer.root / LS_EXPORT).read_text(encoding="utf-8"))
    info.update(
        project_id=project,
        export=LS_EXPORT,
        tasks=len(tasks),
        annotations=sum(len(t.get("annotations") or []) for t in tasks),
    )
    return info


def _inbox(settings: Settings, writer: BackupWriter) -> list[str]:
    """Chat files dropped into the inbox and not ingested yet: they exist nowhere else."""
    inbox = settings.inbox_dir
    if not inbox.is_dir():
        return []
    waiting = sorted(
        p for p in inbox.iterdir() if p.is_file() and p.suffix.lower() in INBOX_SUFFIXES
    )
    writer.stage("inbox", sum(p.stat().st_size for p in waiting))
    for path in waiting:
        writer.copy(path, f"inbox/{path.name}", private=True)
    return [f"inbox/{p.name}" for p in waiting]


def _describe_ls(info: dict[str, Any]) -> str:
    parts = []
    if info.get("data"):
        parts.append("local data directory")
    if info.get("export"):
        parts.append(f"export of {info['tasks']} tasks ({info['annotations']} annotations)")
    if info.get("note"):
        parts.append(str(info["note"]))
    return "; ".join(parts) or "nothing"
