"""Backup and restore of an installation on SQLite, without Label Studio: what comes back,
what is refused, and the permissions of what is written."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from orchestrator.backup import run_backup
from orchestrator.backup_files import MANIFEST
from orchestrator.errors import BackupError
from orchestrator.restore import run_restore
from orchestrator.settings import Settings, load_settings
from store import Store
from tests.installation import install, installed_state
from training import verify_checkpoint

pytestmark = pytest.mark.unit


def _head() -> str | None:
    from store.base import migration_scripts

    return migration_scripts().get_current_head()


def _settings(monkeypatch: pytest.MonkeyPatch, home: Path) -> Settings:
    monkeypatch.setenv("SENTILOOP_HOME", str(home))
    monkeypatch.delenv("SENTILOOP_DATABASE_URL", raising=False)
    monkeypatch.delenv("SENTILOOP_LABEL_STUDIO_URL", raising=False)
    return load_settings()


def test_backup_and_restore_into_another_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, tmp_path / "home")
    store = install(settings)
    before = installed_state(store)
    store.dispose()
    backup = tmp_path / "backup"

    summary = run_backup(settings, backup)

    assert (summary.versions, summary.checkpoints, summary.production) == (3, 2, 3)
    manifest = json.loads((backup / MANIFEST).read_text())
    assert manifest["production_version"] == 3 and manifest["alembic_revision"] == _head()
    assert manifest["store"]["kind"] == "sqlite"
    assert {v["number"]: v["checkpoint"] for v in manifest["versions"]} == {
        1: None,
        2: "models/v0002",
        3: "models/v0003",
    }
    assert (
        "models/v0003.card.json" in manifest["files"] and "inbox/waiting.csv" in manifest["files"]
    )
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    for name in ("store/sentiloop.db", MANIFEST, "models/v0003/model.safetensors"):
        assert stat.S_IMODE((backup / name).stat().st_mode) == 0o600
    assert settings.models_dir.joinpath("v0003").is_dir()  # copied, not moved

    shutil.rmtree(settings.home_dir)
    moved = _settings(monkeypatch, tmp_path / "elsewhere")  # the home moved
    restored = run_restore(moved, backup)

    assert restored.production == 3 and sorted(restored.checkpoints) == ["v0002", "v0003"]
    store = Store(moved.db_url)
    assert installed_state(store) == before
    for v in store.versions():
        assert Path(v.checkpoint_path) == moved.models_dir / f"v{v.number:04d}"
        if not v.checkpoint_deleted:
            assert verify_checkpoint(Path(v.checkpoint_path), v.weights_sha256)
    assert json.loads((moved.models_dir / "v0002.card.json").read_text()) == {"version": 2}
    assert (moved.inbox_dir / "waiting.csv").read_text().startswith("chat_id,text")
    assert stat.S_IMODE(Path(moved.home_dir / "sentiloop.db").stat().st_mode) == 0o600
    store.dispose()


def test_restore_refuses_a_store_with_data_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, tmp_path / "home")
    install(settings).dispose()
    run_backup(settings, tmp_path / "backup")

    with pytest.raises(BackupError, match="already holds chats or model versions"):
        run_restore(settings, tmp_path / "backup")

    summary = run_restore(settings, tmp_path / "backup", force=True)
    assert summary.already_there == ["v0002", "v0003"]  # identical: verified, not rewritten
    [saved] = summary.saved_aside
    assert Path(saved).is_file() and Path(saved).name.startswith("sentiloop.db.before-restore-")
    assert Store(f"sqlite:///{saved}").counts()["chats"] == 25


def test_a_tampered_backup_is_refused_before_anything_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, tmp_path / "home")
    install(settings).dispose()
    backup = tmp_path / "backup"
    run_backup(settings, backup)
    weights = backup / "models" / "v0003" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[10] ^= 0xFF
    weights.write_bytes(bytes(data))
    target = _settings(monkeypatch, tmp_path / "fresh")

    with pytest.raises(BackupError, match=r"models/v0003/model\.safetensors .* sha256"):
        run_restore(target, backup)
    assert not (target.home_dir / "sentiloop.db").exists()
    assert not target.models_dir.exists()


def test_a_checkpoint_on_disk_that_differs_is_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, tmp_path / "home")
    install(settings).dispose()
    run_backup(settings, tmp_path / "backup")
    target = _settings(monkeypatch, tmp_path / "other")
    (target.models_dir / "v0002").mkdir(parents=True)
    (target.models_dir / "v0002" / "model.safetensors").write_bytes(b"someone else's")

    with pytest.raises(BackupError, match="v0002 exists and is not the backup's v2"):
        run_restore(target, tmp_path / "backup", force=True)
    assert (target.models_dir / "v0002" / "model.safetensors").read_bytes() == b"someone else's"


def test_backup_needs_a_new_or_empty_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, tmp_path / "home")
    install(settings).dispose()
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    with pytest.raises(BackupError, match="is not empty"):
        run_backup(settings, full)
    with pytest.raises(BackupError, match="inside"):
        run_backup(settings, settings.models_dir / "backup")
    with pytest.raises(BackupError, match=r"no sentiloop-backup\.json"):
        run_restore(settings, full)
