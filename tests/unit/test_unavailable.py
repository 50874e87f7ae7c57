"""An unreachable service gives a one-line error naming it and the setting to check."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labeling import LabelStudioUnavailable
from orchestrator import steps
from orchestrator.cli import app
from orchestrator.context import Context
from orchestrator.settings import load_settings
from store import DatabaseUnavailable, Store

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_label_studio_fails_the_step_with_the_setting_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.setenv("SENTILOOP_LABEL_STUDIO_URL", url)
    monkeypatch.setenv("SENTILOOP_LABEL_STUDIO_TOKEN", "x" * 40)
    ctx = Context.from_settings(load_settings())
    ctx.store.init()
    with pytest.raises(LabelStudioUnavailable) as info:
        steps.run_step(ctx, "push", steps.push, cycle_id="c1")
    message = str(info.value)
    assert url in message and "SENTILOOP_LABEL_STUDIO_URL" in message and "\n" not in message
    run = ctx.store.runs(limit=1)[0]
    assert (run.step, run.status) == ("push", "failed")
    assert "SENTILOOP_LABEL_STUDIO_URL" in (run.error or "")
    assert not ctx.store.step_done("c1", "push")  # the next tick runs it again
    ctx.labeling().close()
    ctx.store.dispose()


def test_an_unreachable_local_label_studio_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #12, item 8: the user set no URL, so naming SENTILOOP_LABEL_STUDIO_URL misleads."""
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.delenv("SENTILOOP_LABEL_STUDIO_URL", raising=False)
    monkeypatch.setenv("SENTILOOP_LABEL_STUDIO_PORT", str(_closed_port()))
    ctx = Context.from_settings(load_settings())
    ctx.store.init()
    with pytest.raises(LabelStudioUnavailable) as info:
        steps.run_step(ctx, "pull", steps.pull, cycle_id="c1")
    message = str(info.value)
    assert "SENTILOOP_LABEL_STUDIO_URL" not in message
    assert "the local server" in message and "sentiloop labelstudio up" in message
    ctx.labeling().close()
    ctx.store.dispose()


def test_unreachable_database_names_the_setting_and_hides_the_password() -> None:
    store = Store(f"postgresql://sentiloop:s3cret@127.0.0.1:{_closed_port()}/db")
    with pytest.raises(DatabaseUnavailable) as info:
        store.check()
    message = str(info.value)
    assert "SENTILOOP_DATABASE_URL" in message and "s3cret" not in message
    assert "\n" not in message
    store.dispose()


def test_cli_reports_an_unreachable_database_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.setenv(
        "SENTILOOP_DATABASE_URL", f"postgresql+psycopg://u:pw@127.0.0.1:{_closed_port()}/db"
    )
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "database unreachable" in result.output and "SENTILOOP_DATABASE_URL" in result.output
    assert "pw@" not in result.output


@pytest.mark.parametrize(
    "command", [["status"], ["annotators"], ["models", "list"], ["operators", "list"]]
)
def test_cli_on_a_store_never_initialised_says_run_init_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "no schema yet" in result.output and "sentiloop init" in result.output
    assert "Traceback" not in result.output and "SELECT" not in result.output


def test_progress_reads_only_complete_progress_reports() -> None:
    from orchestrator.tasks import progress_of

    report = {"stage": "scoring", "done": 3, "total": 10}
    assert progress_of("PROGRESS", report) == ("scoring", 3, 10)
    # the task finished between reading .state and .info: the info is its result
    assert progress_of("PROGRESS", {"status": "ok", "scored": 10}) is None
    assert progress_of("SUCCESS", report) is None
    assert progress_of("PROGRESS", None) is None
