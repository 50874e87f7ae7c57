"""Nothing lost: an installation backed up, wiped and restored carries on where it was, with
its local Label Studio (same tasks, ids and annotations); the PostgreSQL store round trip."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from labeling import LabelStudioServer, copy_data_dir
from store import Annotation, Store
from tests.installation import install, installed_state
from tests.integration.conftest import (
    TEST_PASSWORD,
    TEST_TOKEN,
    TEST_USERNAME,
    LabelStudioInstance,
    free_port,
    scratch_database,
)
from tests.integration.loop import Loop, make_loop

pytestmark = pytest.mark.integration


def _local_label_studio_up(loop: Loop, executable: Path) -> None:
    """`sentiloop labelstudio up` on the home's own data directory; the test talks to the
    server it started (whatever port it ended up on)."""
    up = loop.cli("labelstudio", "up", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    data_dir = loop.home / "labelstudio"
    url = json.loads((data_dir / "sentiloop-server.json").read_text())["url"]
    server = LabelStudioServer(
        executable, data_dir, username=TEST_USERNAME, password=TEST_PASSWORD, token=TEST_TOKEN
    )
    loop.ls = LabelStudioInstance(
        url=url, token=TEST_TOKEN, server=server, data_dir=data_dir, executable=executable
    )
    loop._client = None


def _annotation_ids(store: Store) -> set[int]:
    with store.session() as s:
        return set(s.exec(select(Annotation.ls_annotation_id)).all())


@pytest.fixture
def local_loop(
    tmp_path: Path, airline: Path, labelstudio_bin: Path, labelstudio_template: Path
) -> Iterator[Loop]:
    """An installation whose Label Studio is the local one sentiloop manages in its home,
    its data directory a copy of the migrated template (made with these credentials)."""
    loop = make_loop(
        tmp_path,
        airline,
        None,
        {
            "SENTILOOP_LABEL_STUDIO_BIN": str(labelstudio_bin),
            "SENTILOOP_LABEL_STUDIO_USERNAME": TEST_USERNAME,
            "SENTILOOP_LABEL_STUDIO_PASSWORD": TEST_PASSWORD,
            "SENTILOOP_LABEL_STUDIO_TOKEN": TEST_TOKEN,
            "SENTILOOP_LABEL_STUDIO_PORT": str(free_port()),
        },
    )
    copy_data_dir(labelstudio_template, loop.home / "labelstudio")
    yield loop
    loop.close()
    loop.cli("labelstudio", "down")


def test_an_installation_survives_backup_wipe_and_restore(
    local_loop: Loop, labelstudio_bin: Path, tmp_path: Path
) -> None:
    from training import verify_checkpoint

    loop = local_loop
    _local_label_studio_up(loop, labelstudio_bin)
    assert loop.cli("init").returncode == 0
    assert loop.cli("ingest", str(loop.pool)).returncode == 0
    loop.start_worker()
    for _ in range(2):  # a cold-start batch, then v1 trained on it and a second batch pushed
        done = loop.cli("cycle")
        assert done.returncode == 0, done.stdout + done.stderr + loop.worker_logs()
        assert loop.annotate_open_tasks() == 40
    # the second batch's annotations are in Label Studio only: the next pull brings them
    store = loop.store()
    production = store.production()
    assert production is not None and production.number == 1
    project = loop.client().ensure_project(loop.env["SENTILOOP_PROJECT_TITLE"])
    tasks_before = loop.client().tasks_by_chat_id(project)
    ls_annotations_before = {
        a.annotation_id for a in loop.client().annotations_since(project, None)
    }
    store_annotations_before = _annotation_ids(store)
    assert len(ls_annotations_before) == 80 and len(store_annotations_before) == 40
    store.dispose()

    backup = tmp_path / "backup"
    saved = loop.cli("backup", str(backup))
    assert saved.returncode == 0, saved.stdout + saved.stderr
    manifest = json.loads((backup / "sentiloop-backup.json").read_text())
    assert manifest["production_version"] == 1
    assert (manifest["label_studio"]["tasks"], manifest["label_studio"]["annotations"]) == (80, 80)
    assert "labelstudio/data/credentials.json" in manifest["files"]
    assert not any(f.endswith((".log", "sentiloop-server.json")) for f in manifest["files"])

    loop.stop_workers()
    assert loop.cli("labelstudio", "down").returncode == 0
    loop.client().close()
    shutil.rmtree(loop.home)

    restored = loop.cli("restore", str(backup))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    store = loop.store()
    after = store.production()
    assert after is not None
    assert (after.number, after.weights_sha256) == (1, production.weights_sha256)
    verify_checkpoint(Path(after.checkpoint_path), after.weights_sha256)
    assert _annotation_ids(store) == store_annotations_before

    loop.env["SENTILOOP_PROMOTE"] = "manual"  # keep v1 production through the next cycle
    _local_label_studio_up(loop, labelstudio_bin)
    assert loop.client().tasks_by_chat_id(project) == tasks_before  # same tasks, same ids
    loop.start_worker()
    cycle = loop.cli("cycle")
    assert cycle.returncode == 0, cycle.stdout + cycle.stderr + loop.worker_logs()
    match = re.search(r"cycle (\S+) queued", cycle.stdout)
    assert match is not None, cycle.stdout
    runs = store.runs(cycle_id=match.group(1))
    assert sorted((r.step, r.status) for r in runs) == [
        ("ingest", "ok"),
        ("pull", "ok"),
        ("push", "ok"),
        ("retrain", "ok"),
        ("score", "ok"),
    ], [(r.step, r.status, r.counts, r.error) for r in runs]

    tasks = loop.client().tasks_by_chat_id(project)
    assert all(len(ids) == 1 for ids in tasks.values())  # no chat has two tasks
    assert len(tasks) == 120
    ls_annotations = {a.annotation_id for a in loop.client().annotations_since(project, None)}
    assert ls_annotations_before <= ls_annotations
    assert ls_annotations_before <= _annotation_ids(store)
    versions = store.versions()
    assert [(v.number, v.status) for v in versions] == [(1, "production"), (2, "candidate")]
    store.dispose()


@pytest.fixture
def another_postgres_url() -> Iterator[str]:
    """A second, empty database to restore into."""
    with scratch_database("sentiloop_restore") as url:
        yield url


def test_postgres_store_backup_and_restore(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    another_postgres_url: str,
) -> None:
    from orchestrator.backup import run_backup
    from orchestrator.errors import BackupError
    from orchestrator.restore import run_restore
    from orchestrator.settings import load_settings
    from store.snapshot import _pg_command

    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.fail("pg_dump and pg_restore must be on PATH for the PostgreSQL backup test")
    monkeypatch.delenv("SENTILOOP_LABEL_STUDIO_URL", raising=False)
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SENTILOOP_DATABASE_URL", postgres_url)
    settings = load_settings()
    store = install(settings)
    before = installed_state(store)
    store.dispose()

    summary = run_backup(settings, tmp_path / "backup")
    assert (summary.store_kind, summary.production, summary.checkpoints) == ("postgresql", 3, 2)
    assert (tmp_path / "backup" / "store" / "sentiloop.pgdump").stat().st_size > 0

    # into another database and another home
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("SENTILOOP_DATABASE_URL", another_postgres_url)
    target = load_settings()
    restored = run_restore(target, tmp_path / "backup")
    assert restored.production == 3
    store = Store(another_postgres_url)
    assert installed_state(store) == before
    assert all(
        Path(v.checkpoint_path).parent == target.models_dir for v in store.versions()
    )  # checkpoint paths follow the new home
    store.dispose()
    with pytest.raises(BackupError, match="already holds"):
        run_restore(target, tmp_path / "backup")
    forced = run_restore(target, tmp_path / "backup", force=True)
    assert forced.saved_aside and Path(forced.saved_aside[0]).stat().st_size > 0

    # the password travels in the environment, never on the command line
    secret = Store(another_postgres_url.replace("postgres@", "postgres:s3cr3t-pw@"))
    args, env = _pg_command("pg_dump", secret)
    assert env["PGPASSWORD"] == "s3cr3t-pw" and not any("s3cr3t" in a for a in args)
    assert "s3cr3t" not in secret.safe_url
    secret.dispose()
