"""Registry rules on a real SQLite store: one production, audit, rollback, lineage, modes,
replay, retention and calibration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from orchestrator import registry
from orchestrator.settings import ConfigError, load_settings
from store import ModelVersion, Store, StoreError, TrainingExample
from tests.conftest import make_context, race_promotions, version_row
from training import apply_temperature, expected_calibration_error, fit_temperature

pytestmark = pytest.mark.unit


def _add(
    store: Store,
    n: int,
    *,
    mode: str = "full",
    parent: int | None = None,
    ids: list[int] | None = None,
    path: str = "/nonexistent",
) -> None:
    store.add_version(
        ModelVersion(
            number=n,
            parent=parent,
            base_model="b",
            checkpoint_path=f"{path}/v{n}",
            weights_sha256="0" * 64,
            data_fingerprint=f"fp{n}",
            mode=mode,
            annotation_ids=ids or [],
        )
    )


def test_promotions_are_audited_and_rollback_returns_to_the_previous(sqlite_store: Store) -> None:
    for n in (1, 2, 3):
        _add(sqlite_store, n)
    sqlite_store.promote(1, actor="alice", reason="first")
    sqlite_store.promote(3, actor="bob", reason="better", forced=True)
    assert sqlite_store.rollback_target() == 1
    record = sqlite_store.promote(1, actor="carol", reason="v3 misroutes", action="rollback")
    assert (record.version, record.previous, record.action) == (1, 3, "rollback")
    audit = [(p.version, p.previous, p.actor, p.forced) for p in sqlite_store.promotions()]
    assert audit == [(1, 3, "carol", False), (3, 1, "bob", True), (1, None, "alice", False)]
    assert [v.status for v in sqlite_store.versions()] == ["production", "candidate", "archived"]


def test_concurrent_promotions_leave_exactly_one_production(sqlite_store: Store) -> None:
    for n in range(1, 9):
        _add(sqlite_store, n)
    errors = race_promotions(sqlite_store.url, 8)
    assert errors == []
    statuses = [v.status for v in sqlite_store.versions()]
    assert statuses.count("production") == 1
    assert len(sqlite_store.promotions()) == 8


def test_the_database_refuses_a_second_production_row(sqlite_store: Store) -> None:
    from sqlalchemy.exc import IntegrityError

    _add(sqlite_store, 1)
    _add(sqlite_store, 2)
    sqlite_store.promote(1, actor="t")
    with sqlite_store.session() as s, pytest.raises(IntegrityError):
        v2 = sqlite_store.version(2)
        assert v2 is not None
        v2.status = "production"
        s.add(v2)
        s.commit()


def test_lineage_follows_incremental_parents_only(sqlite_store: Store) -> None:
    _add(sqlite_store, 1, ids=[1, 2, 3])
    _add(sqlite_store, 2, mode="incremental", parent=1, ids=[4, 2])
    _add(sqlite_store, 3, mode="incremental", parent=2, ids=[5])
    _add(sqlite_store, 4, mode="full", parent=3, ids=[1, 2, 3, 4, 5, 6])
    assert sqlite_store.lineage(3) == [1, 2, 3, 4, 5]
    assert sqlite_store.lineage(4) == [1, 2, 3, 4, 5, 6]
    assert sqlite_store.lineage(1) == [1, 2, 3]


def test_mode_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_context(tmp_path, monkeypatch, retrain_mode="incremental", full_every="3")
    assert registry.choose_mode(ctx, None)[0] == "full"
    _add(ctx.store, 1)
    ctx.store.promote(1, actor="t")
    assert registry.choose_mode(ctx, ctx.store.production())[0] == "incremental"
    _add(ctx.store, 2, mode="incremental", parent=1)
    ctx.store.promote(2, actor="t")
    assert registry.choose_mode(ctx, ctx.store.production())[0] == "incremental"
    _add(ctx.store, 3, mode="incremental", parent=2)
    ctx.store.promote(3, actor="t")
    mode, why = registry.choose_mode(ctx, ctx.store.production())
    assert mode == "full" and "SENTILOOP_FULL_EVERY" in why
    # an incremental candidate that failed the gate forces a full retrain next
    _add(ctx.store, 4, mode="incremental", parent=1)
    ctx.store.set_gate(4, {"passed": False, "reason": "worse"})
    ctx.store.promote(1, actor="t")
    assert registry.choose_mode(ctx, ctx.store.production()) == (
        "full",
        "incremental v4 failed the gate",
    )
    ctx.store.dispose()


def test_train_configs_take_the_settings_and_give_min_steps_to_full_retrains_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTILOOP_TRAIN_MIN_STEPS", "250")
    monkeypatch.setenv("SENTILOOP_INCREMENTAL_EPOCHS", "2")
    full, incremental = registry.train_configs(load_settings())
    assert (full.epochs, full.min_steps, full.learning_rate) == (3, 250, 1e-4)
    assert full.epochs_for(160) == 25  # 10 steps an epoch
    assert (incremental.epochs, incremental.min_steps, incremental.learning_rate) == (2, 0, 5e-5)
    assert incremental.early_stopping_patience == 1
    monkeypatch.setenv("SENTILOOP_TRAIN_MIN_STEPS", "-1")
    with pytest.raises(ConfigError, match="SENTILOOP_TRAIN_MIN_STEPS"):
        load_settings()


def test_replay_sample_is_stratified_and_sized() -> None:
    now = datetime.now(UTC)
    old = [
        TrainingExample(i, i, f"t{i}", lab, now)
        for i, lab in enumerate(["negative"] * 60 + ["neutral"] * 30 + ["positive"] * 10)
    ]
    picked = registry.replay_sample(old, n_new=20, ratio=1.0, seed=0)
    labels = [e.label for e in picked]
    assert len(picked) == 20 and len({e.chat_id for e in picked}) == 20
    assert (labels.count("negative"), labels.count("neutral"), labels.count("positive")) == (
        12,
        6,
        2,
    )
    assert registry.replay_sample(old, n_new=500, ratio=1.0, seed=0) == sorted(
        old, key=lambda e: e.chat_id
    )
    assert registry.replay_sample(old, n_new=10, ratio=0.0, seed=0) == []


def test_retention_keeps_production_parent_rollback_target_and_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path, monkeypatch, keep_candidates="1")
    models = tmp_path / "models"
    for n in range(1, 7):
        (models / f"v{n}").mkdir(parents=True)
        _add(ctx.store, n, parent=n - 1 if n > 1 else None, path=str(models))
    ctx.store.promote(2, actor="t")
    ctx.store.promote(4, actor="t")  # production v4: parent v3, rollback target v2
    deleted = registry.apply_retention(ctx)
    assert sorted(deleted) == ["v1", "v5"]
    assert sorted(p.name for p in models.iterdir()) == ["v2", "v3", "v4", "v6"]
    rows = {v.number: v.checkpoint_deleted for v in ctx.store.versions()}
    assert rows == {1: True, 2: False, 3: False, 4: False, 5: True, 6: False}
    ctx.store.dispose()


def test_a_teacher_is_registered_never_served_and_kept_with_its_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path, monkeypatch, keep_candidates="0")
    store, models = ctx.store, tmp_path / "models"
    for n in range(1, 5):
        (models / f"v{n}").mkdir(parents=True)
    store.add_version(
        version_row(
            1,
            status="teacher",
            annotation_ids=[1, 2],
            checkpoint_path=str(models / "v1"),
            data_fingerprint="t1",
        )
    )
    store.add_version(
        version_row(
            2,
            teacher=1,
            annotation_ids=[1, 2],
            pool_chat_ids=[7, 8],
            checkpoint_path=str(models / "v2"),
            data_fingerprint="s2",
        )
    )
    store.add_version(
        version_row(
            3,
            status="teacher",
            annotation_ids=[1, 2, 3],
            checkpoint_path=str(models / "v3"),
            data_fingerprint="t3",
        )
    )
    store.add_version(
        version_row(
            4,
            mode="incremental",
            parent=2,
            annotation_ids=[4],
            checkpoint_path=str(models / "v4"),
            data_fingerprint="s4",
        )
    )
    with pytest.raises(StoreError, match="distillation teacher"):
        store.promote(1, actor="t")
    store.promote(2, actor="t")
    assert store.newest_version().number == 4  # type: ignore[union-attr]
    store.add_version(version_row(5, status="teacher", data_fingerprint="t5"))
    newest = store.newest_version()  # a teacher is not a version to serve
    assert newest is not None and newest.number == 4
    # v4 warm-started from the distilled v2: it learned v2's teacher and pool too
    assert store.lineage(4) == [1, 2, 4] and store.pool_chats(4) == [7, 8]
    assert store.pool_chats(1) == []
    store.promote(4, actor="t")
    # production v4 and its parent v2 stay, and so does v2's teacher; teachers of no kept
    # version go
    assert sorted(registry.apply_retention(ctx)) == ["v3", "v5"]
    ctx.store.dispose()


def test_selecting_with_the_teacher_needs_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTILOOP_SELECT_WITH", "teacher")
    with pytest.raises(ConfigError, match=r"SENTILOOP_SELECT_WITH: .*SENTILOOP_TEACHER_MODEL"):
        load_settings()
    monkeypatch.setenv("SENTILOOP_TEACHER_MODEL", "all-mpnet-base-v2")
    assert load_settings().select_with == "teacher"
    monkeypatch.setenv("SENTILOOP_SELECT_WITH", "the-boss")
    with pytest.raises(ConfigError, match=r"SENTILOOP_SELECT_WITH: .*serving, teacher"):
        load_settings()


def test_temperature_scaling_fixes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    labels = ["negative", "neutral", "positive"]
    y = rng.integers(0, 3, size=3000)
    logits = rng.normal(size=(3000, 3))
    logits[np.arange(3000), y] += 1.0  # informative but weak...
    probs = np.exp(logits * 4)  # ...and made over-confident
    probs /= probs.sum(axis=1, keepdims=True)
    names = [labels[i] for i in y]
    t = fit_temperature(probs, names)
    assert t > 2.0
    before = expected_calibration_error(probs, names)
    after = expected_calibration_error(apply_temperature(probs, t), names)
    assert after < before / 2
    same = apply_temperature(probs, t)
    assert (same.argmax(axis=1) == probs.argmax(axis=1)).all()  # ranking of classes unchanged
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs)


def test_the_hub_card_names_what_it_knows_of_the_base_model() -> None:
    import yaml

    from orchestrator.cards import hub_readme

    card = {
        "version": 3,
        "status": "candidate",
        "mode": "incremental",
        "parent": 2,
        "base_model": "/models/chinese-bert",
        "checkpoint": "/home/models/v0003",
        "weights_sha256": "0" * 64,
        "trained_on_annotations": 10,
        "lineage_annotations": 30,
        "temperature": 1.5,
        "metrics": {},
        "gate": {},
    }
    meta = yaml.safe_load(hub_readme(card).split("---\n")[1])
    assert meta["license"] == "other" and "base_model" not in meta and "language" not in meta
    assert meta["model-index"][0]["results"][0]["metrics"] == []
