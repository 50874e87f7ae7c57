"""`sentiloop status --check` exits non-zero and says why when the loop is degraded (issue #12,
item 8)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from orchestrator.cli import app
from store import Store
from store.models import Lease, utcnow

pytestmark = pytest.mark.unit


def test_status_check_names_each_way_the_loop_is_degraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.setenv("SENTILOOP_LABEL_STUDIO_PORT", "9")  # nothing listens there
    store = Store(f"sqlite:///{tmp_path / 'sentiloop.db'}")
    store.init()
    for i in range(3):  # push failed in each of its last three runs
        run = store.start_run(f"c{i}", "push", "beat")
        store.finish_run(run, "failed", {}, error="LabelingError: HTTP 400: bad label config")
    ok = store.start_run("c3", "pull", "beat")
    store.finish_run(ok, "ok", {})
    with store.lease("retrain"):  # a lease whose holder stopped renewing it
        with store.session() as s:
            s.exec(
                update(Lease)
                .where(Lease.name == "retrain")  # type: ignore[arg-type]
                .values(expires_at=utcnow() - timedelta(minutes=5))
            )
            s.commit()
        result = CliRunner().invoke(app, ["status", "--check"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "push has failed 3 times in a row: LabelingError: HTTP 400" in out
    assert "lease 'retrain' expired" in out
    assert "Label Studio unreachable" in out and "local server" in out
    assert "pull has" not in out
    store.dispose()
