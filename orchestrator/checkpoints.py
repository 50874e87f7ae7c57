"""The ``models/`` directory: claiming a checkpoint directory before a retrain writes it,
and cleaning up after retrains that did not finish.

The rule: nothing is deleted from ``models/`` unless this installation wrote it and it is
known not to be referenced. A directory the store does not know is left alone (it may be a
valid checkpoint that a restored, older store has forgotten); only directories named by an
intent that outlived its run, and carrying that intent's token, are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import uuid
from pathlib import Path

from orchestrator.context import Context
from store.checkpoints import claim_checkpoint, drop_intent, intents
from store.models import CheckpointIntent

logger = logging.getLogger(__name__)

#: A ``.tmp-*`` directory no intent names is removed once nothing in it changed for this
#: long: a save in progress elsewhere keeps writing into it, so it stays younger.
STALE_TMP_S = 3600.0
#: Manifest of a published checkpoint (training.checkpoint.MANIFEST_NAME; repeated so this
#: module loads without torch).
MANIFEST_NAME = "sentiloop.json"
_NUMBERED = re.compile(r"^(?:\.tmp-)?v(\d+)(?:[.-]|$)")


def checkpoint_name(number: int) -> str:
    return f"v{number:04d}"


def numbers_on_disk(models_dir: Path) -> set[int]:
    """Version numbers used by any entry of ``models/`` (checkpoints, cards, temporaries)."""
    if not models_dir.is_dir():
        return set()
    found = (_NUMBERED.match(entry.name) for entry in models_dir.iterdir())
    return {int(m.group(1)) for m in found if m}


def claim(ctx: Context) -> CheckpointIntent:
    """Claim the next version number and its directory before writing it. The number is
    above every registered one and every one found in ``models/``."""
    models_dir = ctx.settings.models_dir
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return claim_checkpoint(
        ctx.store,
        owner=owner,
        path_for=lambda n: str(models_dir / checkpoint_name(n)),
        taken=numbers_on_disk(models_dir),
    )


def clean_models_dir(ctx: Context) -> list[str]:
    """Delete what retrains that did not finish left behind; return the names removed.

    Run it under the retrain step's lease: then no intent in the store belongs to a run
    in progress (a run that lost its lease cannot register afterwards: its intent is gone).
    """
    from training import clean_stale_tmp

    models_dir = ctx.settings.models_dir
    if not models_dir.is_dir():
        return []
    referenced = {_resolved(v.checkpoint_path) for v in ctx.store.versions()}
    removed: list[str] = []
    for intent in intents(ctx.store):
        removed += _remove_unfinished(models_dir, intent, referenced)
        drop_intent(ctx.store, intent)
    removed += [p.name for p in clean_stale_tmp(models_dir, min_age_s=STALE_TMP_S)]
    unknown = sorted(
        p.name
        for p in models_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.resolve() not in referenced
    )
    if unknown:
        logger.info(
            "models/ holds %d directories the store does not know, left alone: %s",
            len(unknown),
            ", ".join(unknown),
        )
    return removed


def _remove_unfinished(
    models_dir: Path, intent: CheckpointIntent, referenced: set[Path]
) -> list[str]:
    """The files of one unfinished run: its half-written temporaries, and its published
    directory if it carries the intent's token and no version references it."""
    path = Path(intent.path)
    if path.parent.resolve() != models_dir.resolve() or path.name != intent.name:
        logger.warning(
            "intent v%d names %s outside %s: left alone", intent.number, path, models_dir
        )
        return []
    removed = []
    tmp_name = re.compile(rf"^\.tmp-{re.escape(intent.name)}-[0-9a-f]{{32}}$")
    for entry in sorted(models_dir.iterdir()):
        if tmp_name.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if path.is_dir() and not path.is_symlink():  # the run got as far as publishing
        removed += _remove_published(path, intent, referenced)
    if removed:
        logger.warning("removed what an unfinished retrain left: %s", ", ".join(removed))
    return removed


def _remove_published(path: Path, intent: CheckpointIntent, referenced: set[Path]) -> list[str]:
    """An unfinished run's published directory goes only if it carries the intent's token
    and no version references it."""
    if path.resolve() in referenced:
        logger.warning("intent v%d names %s, which a version references: kept", intent.number, path)
        return []
    if _token(path) != intent.token:
        logger.warning(
            "%s was not written by the run of intent v%d: left alone", path, intent.number
        )
        return []
    shutil.rmtree(path)
    return [path.name]


def _token(path: Path) -> str | None:
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
        token = manifest["metadata"]["intent"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return token if isinstance(token, str) else None


def _resolved(path: str) -> Path:
    return Path(path).resolve()
