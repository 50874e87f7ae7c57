"""Files of a backup directory: written private and hashed as they are copied, listed with
their sha256 in the manifest ``sentiloop-backup.json`` (written last, so a directory
without it is an incomplete backup), and checked against it before a restore."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from orchestrator.context import Progress
from orchestrator.errors import BackupError
from store.snapshot import copy_sqlite

MANIFEST = "sentiloop-backup.json"
FORMAT = 1
CHUNK = 1 << 20
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Files SQLite keeps beside a database; the online backup already holds their content.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

"""(stage, bytes done, bytes in the stage)."""


def no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    private: bool


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def safe_relative(rel: str) -> PurePosixPath:
    """A manifest path that stays inside the backup (no absolute path, no ``..``)."""
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts or ".." in path.parts or "\\" in rel:
        raise BackupError(f"the manifest names an unsafe path {rel!r}: not a sentiloop backup")
    return path


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


class BackupWriter:
    """Writes files into the backup directory: each created 0600 (never readable by
    others, whatever the umask), fsynced and hashed as it is written."""

    def __init__(self, root: Path, progress: Progress = no_progress) -> None:
        self.root = root
        self.files: dict[str, FileEntry] = {}
        self._progress = progress
        self._stage = ""
        self._done = self._total = 0

    def stage(self, name: str, total: int) -> None:
        self._stage, self._done, self._total = name, 0, total
        self._progress(name, 0, total)

    def advance(self, n: int) -> None:
        self._done += n
        self._progress(self._stage, min(self._done, self._total), self._total)

    def path(self, rel: str) -> Path:
        target = self.root / safe_relative(rel)
        missing = [d for d in target.parents if not d.is_dir()]
        for folder in reversed(missing):  # each level 0700, not just the last
            folder.mkdir(mode=0o700, exist_ok=True)
        return target

    @contextmanager
    def create(self, rel: str, *, private: bool = True) -> Iterator[BinaryIO]:
        """A new file to write into; listed with its hash once closed."""
        target = self.path(rel)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        self.record(rel, private=private)

    def record(self, rel: str, *, private: bool = True) -> None:
        """List a file already written at ``rel`` (e.g. by pg_dump) with its hash."""
        target = self.root / safe_relative(rel)
        target.chmod(0o600)
        self.files[rel] = FileEntry(sha256_file(target), target.stat().st_size, private)

    def copy(self, src: Path, rel: str, *, private: bool = False) -> None:
        """Copy a file that nobody writes meanwhile (a published checkpoint, a card)."""
        digest = hashlib.sha256()
        with src.open("rb") as fin, self.create(rel, private=private) as fout:
            for block in iter(lambda: fin.read(CHUNK), b""):
                digest.update(block)
                fout.write(block)
                self.advance(len(block))
        if self.files[rel].sha256 != digest.hexdigest():
            raise BackupError(f"{src} changed while it was copied into the backup")

    def copy_sqlite(self, src: Path, rel: str) -> None:
        """A consistent copy of a live SQLite database (the online backup API)."""
        try:
            copy_sqlite(src, self.path(rel))
        except sqlite3.Error as exc:
            raise BackupError(f"could not copy the SQLite database {src}: {exc}") from exc
        self.record(rel, private=True)
        self.advance(src.stat().st_size)

    def copy_tree(self, src: Path, rel: str, skip: Callable[[Path], bool]) -> None:
        """Copy a directory that a running server may be writing: its SQLite databases
        through the online backup API, other files as they are; ``skip`` leaves some out.
        Every file is marked private (a server's data holds its keys and credentials)."""
        for path in sorted(src.rglob("*")):
            if not path.is_file() or path.is_symlink() or skip(path):
                continue
            if path.name.endswith(SQLITE_SIDE_FILES) and is_sqlite(
                path.with_name(path.name.rsplit("-", 1)[0])
            ):
                continue
            target = f"{rel}/{path.relative_to(src).as_posix()}"
            if is_sqlite(path):
                self.copy_sqlite(path, target)
            else:
                self.copy(path, target, private=True)

    def write_manifest(self, content: dict[str, Any]) -> None:
        """The manifest, last: its presence marks the backup complete."""
        body = {**content, "files": {k: asdict(v) for k, v in sorted(self.files.items())}}
        target = self.root / MANIFEST
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a complete backup, or a BackupError that says what is wrong."""
    path = root / MANIFEST
    if not root.is_dir():
        raise BackupError(f"{root} is not a directory")
    if not path.is_file():
        raise BackupError(
            f"{root} has no {MANIFEST}: it is not a sentiloop backup, or one that did not finish"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path} is unreadable: {exc}") from exc
    shape = {"files": dict, "store": dict, "versions": list, "label_studio": dict}
    if not isinstance(manifest, dict) or any(
        not isinstance(manifest.get(key), kind) for key, kind in shape.items()
    ):
        raise BackupError(f"{path} is not a sentiloop backup manifest")
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{path} has format {manifest.get('format')!r}; this sentiloop reads format {FORMAT}"
        )
    return manifest


def verify_files(root: Path, manifest: dict[str, Any], progress: Progress = no_progress) -> None:
    """Check every listed file's size and sha256 before anything is restored."""
    files: dict[str, Any] = manifest["files"]
    total = sum(int(e.get("size", 0)) for e in files.values())
    done = 0
    progress("verify", 0, total)
    for rel, entry in sorted(files.items()):
        path = root / safe_relative(rel)
        if not path.is_file():
            raise BackupError(f"the backup is missing {rel}")
        if path.stat().st_size != entry.get("size"):
            raise BackupError(
                f"{rel} in the backup has the wrong size: it was changed or truncated"
            )

        def step(n: int) -> None:
            nonlocal done
            done += n
            progress("verify", done, total)

        if sha256_file(path, step) != entry.get("sha256"):
            raise BackupError(f"{rel} in the backup does not match its sha256: it was changed")
