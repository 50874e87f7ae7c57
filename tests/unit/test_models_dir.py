"""The models/ rule: nothing is deleted unless this installation wrote it and it is known
not to be referenced; version numbers never collide with what lies on disk."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from orchestrator import registry
from orchestrator.context import Context
from orchestrator.settings import load_settings
from store import Annotation, Chat, utcnow

pytestmark = pytest.mark.unit

TEXTS = {
    "negative": ["my flight was cancelled again", "lost my bag, nobody helps", "worst delay ever"],
    "neutral": ["what time does boarding start", "is there wifi on board", "gate changed to B4"],
    "positive": ["great crew, thank you", "smooth flight and early arrival", "love the new seats"],
}


def _ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    env = {
        "HOME": str(tmp_path / "home"),
        "MIN_TRAIN_LABELS": "4",
        "TRAIN_EPOCHS": "1",
        "TRAIN_MIN_STEPS": "0",
        "DEVICE": "cpu",
        "SCORE_PRECISION": "fp32",
    }
    for key, value in env.items():
        monkeypatch.setenv(f"SENTILOOP_{key}", value)
    ctx = Context.from_settings(load_settings())
    ctx.store.init()
    return ctx


def _label_chats(ctx: Context) -> None:
    """Labelled chats written as rows (the store's ingest API is not what is tested)."""
    now = utcnow()
    with ctx.store.session() as s:
        n = 0
        for label, texts in TEXTS.items():
            for text in texts * 2:
                n += 1
                chat = Chat(source_id=f"c{n}", text=f"{text} #{n}")
                s.add(chat)
                s.flush()
                assert chat.id is not None
                s.add(
                    Annotation(
                        ls_annotation_id=1000 + n,
                        ls_task_id=500 + n,
                        project_id=1,
                        chat_id=chat.id,
                        label=label,
                        created_at=now,
                        updated_at=now,
                    )
                )
        s.commit()


def _foreign_checkpoint(path: Path) -> None:
    """A complete-looking checkpoint this store never heard of (from a lost future)."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights of another time")
    (path / "sentiloop.json").write_text(json.dumps({"metadata": {"version": 6}}))


def test_a_directory_the_store_does_not_know_survives_a_retrain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = _ctx(tmp_path, monkeypatch)
    _label_chats(ctx)
    models = ctx.settings.models_dir
    _foreign_checkpoint(models / "v0006")
    caplog.set_level(logging.INFO, logger="orchestrator")

    result = registry.retrain(ctx, lambda stage, done, total: None)

    assert (models / "v0006" / "model.safetensors").read_bytes() == b"weights of another time"
    assert "v0006" not in result["cleaned"]
    # the next number skips the one taken on disk, so nothing is ever written over it
    assert result["version"] == 7
    assert [v.number for v in ctx.store.versions()] == [7]
    assert Path(ctx.store.versions()[0].checkpoint_path) == models / "v0007"
    assert any("left alone: v0006" in r.getMessage() for r in caplog.records)
    ctx.store.dispose()


def test_the_next_number_skips_numbers_taken_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.checkpoints import claim, numbers_on_disk

    ctx = _ctx(tmp_path, monkeypatch)
    models = ctx.settings.models_dir
    models.mkdir(parents=True)
    (models / "v0003").mkdir()
    (models / "v0009.card.json").write_text("{}")  # a card outliving its checkpoint
    (models / f".tmp-v0011-{'a' * 32}").mkdir()  # a save in progress elsewhere
    (models / "notes").mkdir()
    assert numbers_on_disk(models) == {3, 9, 11}
    first = claim(ctx)
    second = claim(ctx)  # a claimed number is taken too, before anything is written
    assert (first.number, first.name, first.path) == (12, "v0012", str(models / "v0012"))
    assert second.number == 13
    ctx.store.dispose()


def test_an_intent_left_by_a_crashed_run_is_cleaned_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.checkpoints import claim, clean_models_dir
    from store import ModelVersion, StoreError
    from store.checkpoints import intents, register_version

    ctx = _ctx(tmp_path, monkeypatch)
    models = ctx.settings.models_dir
    crashed = claim(ctx)  # crashed between the rename and the registration
    published = Path(crashed.path)
    published.mkdir(parents=True)
    (published / "sentiloop.json").write_text(json.dumps({"metadata": {"intent": crashed.token}}))
    half = models / f".tmp-{crashed.name}-{'b' * 32}"  # and its half-written save
    half.mkdir()
    other = claim(ctx)  # an intent whose directory someone else wrote: not ours to delete
    _foreign_checkpoint(Path(other.path))
    _foreign_checkpoint(models / "v0042")  # unknown, named by no intent

    removed = clean_models_dir(ctx)

    assert sorted(removed) == sorted([crashed.name, half.name])
    assert not published.exists() and not half.exists()
    assert Path(other.path, "model.safetensors").exists()
    assert (models / "v0042" / "model.safetensors").exists()
    assert intents(ctx.store) == []
    # the crashed run, were it only slow (its lease lost), can no longer register
    version = ModelVersion(
        number=crashed.number,
        base_model="b",
        checkpoint_path=crashed.path,
        weights_sha256="0" * 64,
        data_fingerprint="fp",
    )
    with pytest.raises(StoreError, match="lost its lease"):
        register_version(ctx.store, version, crashed)
    assert ctx.store.versions() == []
    ctx.store.dispose()


def test_registering_deletes_the_intent_in_the_same_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.checkpoints import claim
    from store import ModelVersion
    from store.checkpoints import intents, register_version

    ctx = _ctx(tmp_path, monkeypatch)
    intent = claim(ctx)
    assert [i.number for i in intents(ctx.store)] == [1]
    register_version(
        ctx.store,
        ModelVersion(
            number=1,
            base_model="b",
            checkpoint_path=intent.path,
            weights_sha256="0" * 64,
            data_fingerprint="fp",
        ),
        intent,
    )
    assert intents(ctx.store) == []
    assert [v.number for v in ctx.store.versions()] == [1]
    ctx.store.dispose()


def test_a_save_in_progress_elsewhere_is_not_taken_for_debris(tmp_path: Path) -> None:
    from training import clean_stale_tmp

    writing = tmp_path / ".tmp-v0002-0123"
    writing.mkdir()
    (writing / "model.safetensors").write_bytes(b"still being written")
    old = time.time() - 7200
    os.utime(writing, (old, old))  # the directory's own mtime stands still during the write
    assert clean_stale_tmp(tmp_path, min_age_s=3600) == []
    os.utime(writing / "model.safetensors", (old, old))
    assert clean_stale_tmp(tmp_path, min_age_s=3600) == [writing]
