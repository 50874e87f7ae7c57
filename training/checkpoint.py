"""Atomic, verifiable checkpoints.

A checkpoint is written into a hidden ``.tmp-*`` directory, its manifest
``sentiloop.json`` last, then renamed into place. So a directory named like a checkpoint
is either complete or absent, and a crash leaves only ``.tmp-*`` debris to clean up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.errors import CheckpointError

__all__ = [
    "MANIFEST_NAME",
    "WEIGHTS_NAME",
    "CheckpointInfo",
    "clean_stale_tmp",
    "is_complete",
    "save_checkpoint",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "sentiloop.json"
WEIGHTS_NAME = "model.safetensors"
TMP_PREFIX = ".tmp-"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a checkpoint lives and the sha256 of its weights (its identity)."""

    path: Path
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory below ``root`` so the rename publishes durable data."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )


def _check_name(name: str) -> None:
    if (
        not name
        or name in {".", ".."}
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or "\x00" in name
    ):
        raise CheckpointError(f"invalid checkpoint name {name!r}: must be a plain directory name")


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    root: Path,
    name: str,
    metadata: dict[str, object],
) -> CheckpointInfo:
    """Write model, tokenizer and manifest to ``root/name`` atomically.

    Raises :class:`CheckpointError` if ``root/name`` already exists: callers allocate
    unique names, and silently replacing a published checkpoint would break its sha256.
    """
    _check_name(name)
    root = Path(root)
    final = root / name
    if final.exists():
        raise CheckpointError(f"checkpoint {final} already exists; use a new name")
    try:
        metadata_json = json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {exc}") from exc
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        model.save_pretrained(str(tmp))  # transformers 5 always writes safetensors
        tokenizer.save_pretrained(str(tmp))
        weights = tmp / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"save_pretrained did not write a single {WEIGHTS_NAME} in {tmp}")
        files = {rel: _sha256(tmp / rel) for rel in _files(tmp)}
        manifest = {
            "format": _FORMAT_VERSION,
            "name": name,
            "weights": WEIGHTS_NAME,
            "weights_sha256": files[WEIGHTS_NAME],
            "files": files,
            "metadata": metadata_json,
        }
        _fsync_tree(tmp)
        # Manifest last: its presence is what marks the directory complete.
        with (tmp / MANIFEST_NAME).open("w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            raise CheckpointError(f"checkpoint {final} already exists; use a new name")
        try:
            os.rename(tmp, final)
        except OSError as exc:
            raise CheckpointError(f"could not move checkpoint into {final}: {exc}") from exc
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved checkpoint %s (weights sha256 %s)", final, files[WEIGHTS_NAME])
    return CheckpointInfo(path=final, sha256=files[WEIGHTS_NAME])


def read_manifest(path: Path) -> dict[str, object]:
    """Load ``sentiloop.json``; a missing or unreadable manifest means incomplete."""
    manifest_path = Path(path) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {MANIFEST_NAME} is missing")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has an unreadable manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} has a malformed manifest")
    return data


def verify_checkpoint(path: Path, expected_sha256: str | None = None) -> str:
    """Recompute all file hashes against the manifest and return the weights sha256.

    ``expected_sha256`` (e.g. from the model registry) also guards against a manifest
    rewritten together with the weights.
    """
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest.get("files")
    recorded = manifest.get("weights_sha256")
    if not isinstance(files, dict) or not isinstance(recorded, str) or WEIGHTS_NAME not in files:
        raise CheckpointError(f"checkpoint {path} has a malformed manifest")
    for rel, digest in sorted(files.items()):
        file_path = path / rel
        if not file_path.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {rel} is missing")
        actual = _sha256(file_path)
        if actual != digest:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: sha256 of {rel} is {actual}, manifest says {digest}"
            )
    if files[WEIGHTS_NAME] != recorded:
        raise CheckpointError(f"checkpoint {path} has an inconsistent manifest")
    if expected_sha256 is not None and recorded != expected_sha256:
        raise CheckpointError(
            f"checkpoint {path} has weights sha256 {recorded}, expected {expected_sha256}"
        )
    return recorded


def is_complete(path: Path) -> bool:
    """Cheap check (no hashing): a published directory with a manifest."""
    path = Path(path)
    return (
        path.is_dir() and not path.name.startswith(TMP_PREFIX) and (path / MANIFEST_NAME).is_file()
    )


def _newest_mtime(root: Path) -> float:
    """The latest modification time of ``root`` and everything below it (0 if it is gone)."""
    newest = 0.0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except FileNotFoundError:  # renamed or removed by its writer meanwhile
                continue
    return newest


def clean_stale_tmp(root: Path, *, min_age_s: float = 0.0) -> list[Path]:
    """Remove ``.tmp-*`` directories left by crashed saves and return them.

    Call it when no save can be running (e.g. at worker start), or pass ``min_age_s``
    so that a save in progress elsewhere is not pulled from under its writer: the age is
    that of the newest file or directory inside, since a directory's own mtime stands
    still while a large weights file is being written into it.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    now = time.time()
    removed: list[Path] = []
    for entry in sorted(root.glob(f"{TMP_PREFIX}*")):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if min_age_s > 0 and now - _newest_mtime(entry) < min_age_s:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.warning("removed stale temporary checkpoint directory %s", entry)
        removed.append(entry)
    return removed
