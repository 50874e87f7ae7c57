"""Unit tests for labeling/: pure logic, no Label Studio process."""

from __future__ import annotations

import stat
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labeling import (
    LABEL_CHOICES,
    LABEL_CONFIG,
    STATE_FILE,
    AnnotationOut,
    LabelStudioServer,
    LabelStudioStartError,
    clean_env,
    copy_data_dir,
    next_cursor,
    parse_port,
)
from labeling.payloads import _label_from_result, _task_payload
from labeling.server import _pid_alive

pytestmark = pytest.mark.unit


def test_label_config_is_xml_with_lowercase_single_choice() -> None:
    root = ET.fromstring(LABEL_CONFIG)
    (choices,) = root.iter("Choices")
    assert choices.get("name") == "sentiment"
    assert choices.get("toName") == "text"
    assert choices.get("choice") == "single-radio"
    stored = [c.get("alias") or c.get("value") for c in choices.iter("Choice")]
    assert sorted(v for v in stored if v) == sorted(LABEL_CHOICES)
    assert LABEL_CHOICES == ("negative", "neutral", "positive")
    shown = {c.get("value") for c in choices.iter("Choice")}
    assert shown == {"Negative", "Neutral", "Positive"}
    variables = {e.get("value") for e in root.iter() if (e.get("value") or "").startswith("$")}
    assert {"$text", "$meta"} <= variables
    assert "$chat_id" in LABEL_CONFIG


def test_clean_env_does_not_inherit_settings() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/home/x",
        "LANG": "C.UTF-8",
        "HOST": "0.0.0.0",
        "PORT": "9999",
        "USERNAME": "someone",
        "PASSWORD": "leak",
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "other",
    }
    env = clean_env(Path("/data"), username="u@x", password="pw", token="t" * 40, base=parent)
    for key in ("HOST", "PORT", "USERNAME", "PASSWORD", "DEBUG", "DJANGO_SETTINGS_MODULE"):
        assert key not in env
    assert env["PATH"] == "/usr/bin"
    assert env["HOME"] == "/home/x"
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == "/data"
    assert env["LABEL_STUDIO_USERNAME"] == "u@x"
    assert env["LABEL_STUDIO_USER_TOKEN"] == "t" * 40
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["DJANGO_DB"] == "sqlite"


def test_parse_port_from_log_line() -> None:
    log = (
        "=> Static URL is set to: /static/\n"
        "Django version 5.1.10, using settings 'label_studio.core.settings.label_studio'\n"
        "Starting development server at http://127.0.0.1:8081/\n"
        "Quit the server with CONTROL-C.\n"
    )
    assert parse_port(log) == 8081
    assert parse_port("Starting development server at http://0.0.0.0:18080/") == 18080
    assert parse_port("=> Database and media directory: /tmp/x\n") is None


def test_task_payload_carries_prediction() -> None:
    from labeling import PredictionIn, TaskIn

    payload = _task_payload(TaskIn("c1", "hi", "airline: X", PredictionIn("positive", 0.9, "m-3")))
    assert payload["data"] == {"text": "hi", "chat_id": "c1", "meta": "airline: X"}
    (pred,) = payload["predictions"]
    assert pred["model_version"] == "m-3"
    assert pred["score"] == 0.9
    assert pred["result"][0]["from_name"] == "sentiment"
    assert pred["result"][0]["to_name"] == "text"
    assert pred["result"][0]["value"] == {"choices": ["positive"]}
    assert "predictions" not in _task_payload(TaskIn("c2", "x", "m", None))
    with pytest.raises(ValueError):
        _task_payload(TaskIn("c3", "x", "m", PredictionIn("happy", 0.5, "m")))


def test_label_from_result() -> None:
    def result(choice: str) -> list[dict[str, object]]:
        return [{"from_name": "sentiment", "type": "choices", "value": {"choices": [choice]}}]

    assert _label_from_result(result("neutral"), 1) == "neutral"
    assert _label_from_result(result("Positive"), 1) == "positive"
    assert _label_from_result(result("angry"), 1) is None
    assert _label_from_result([], 1) is None


def test_next_cursor_takes_latest_update() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)

    def ann(i: int, updated: datetime) -> AnnotationOut:
        return AnnotationOut(i, i, f"c{i}", "neutral", "a", t, updated, False)

    assert next_cursor([], None) is None
    assert next_cursor([], t) == t
    later = t + timedelta(seconds=5)
    assert next_cursor([ann(1, t), ann(2, later)], None) == later
    assert next_cursor([ann(1, t)], later) == later


def test_copy_data_dir_skips_pid_record(tmp_path: Path) -> None:
    template = tmp_path / "template"
    (template / "media").mkdir(parents=True)
    (template / "label_studio.sqlite3").write_text("db")
    (template / "media" / "f").write_text("x")
    (template / STATE_FILE).write_text("{}")
    dest = tmp_path / "copy"
    copy_data_dir(template, dest)
    assert (dest / "label_studio.sqlite3").read_text() == "db"
    assert (dest / "media" / "f").exists()
    assert not (dest / STATE_FILE).exists()


def _server(executable: Path, data_dir: Path) -> LabelStudioServer:
    return LabelStudioServer(
        executable, data_dir, port=8089, username="u@x", password="pw", token="t" * 40
    )


def test_start_without_executable_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(LabelStudioStartError) as excinfo:
        _server(tmp_path / "missing" / "label-studio", tmp_path / "data").start(timeout=5)
    message = str(excinfo.value)
    assert "SENTILOOP_LABEL_STUDIO_BIN" in message
    assert "make setup" in message


def test_start_reports_log_tail_when_server_exits(tmp_path: Path) -> None:
    fake = tmp_path / "label-studio"
    fake.write_text("#!/bin/sh\necho 'boom: port is cursed'\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    server = _server(fake, tmp_path / "data")
    with pytest.raises(LabelStudioStartError) as excinfo:
        server.start(timeout=10)
    assert "boom: port is cursed" in str(excinfo.value)
    assert "code 3" in str(excinfo.value)
    assert not server.state_path.exists()
    assert server.stop() is False


def test_stale_record_is_ignored(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / STATE_FILE).write_text('{"pid": 999999999, "port": 1, "url": "http://127.0.0.1:1"}')
    server = _server(tmp_path / "missing", data_dir)
    assert not _pid_alive(999999999)
    assert not server.running()
    assert server.stop() is False
    assert not (data_dir / STATE_FILE).exists()
