"""Integration tests for labeling/ against a real Label Studio server."""

from __future__ import annotations

import json
import socket
from datetime import UTC
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from labeling import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioServer,
    LabelStudioUnavailable,
    PredictionIn,
    TaskIn,
    next_cursor,
)

pytestmark = pytest.mark.integration


class LabelStudioInstance(Protocol):
    """Shape of the ``labelstudio`` fixture (see conftest.py)."""

    url: str
    token: str
    server: LabelStudioServer
    data_dir: Path
    executable: Path
    username: str
    password: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tasks(n: int, *, with_prediction: bool = True) -> list[TaskIn]:
    return [
        TaskIn(
            chat_id=f"chat-{i}",
            text=f"message number {i}",
            meta=f"airline: United · 2015-02-24 11:{i:02d}",
            prediction=PredictionIn(label="positive", score=0.75, model_version="m-1")
            if with_prediction
            else None,
        )
        for i in range(n)
    ]


def test_ensure_project_is_idempotent(labelstudio: LabelStudioInstance) -> None:
    with LabelStudioClient(labelstudio.url, labelstudio.token) as client:
        client.check()
        first = client.ensure_project("sentiloop", "chats to label")
        assert client.ensure_project("sentiloop") == first
        assert client.ensure_project("sentiloop 2") != first


def test_import_tasks_with_prediction_and_reconcile(labelstudio: LabelStudioInstance) -> None:
    with LabelStudioClient(labelstudio.url, labelstudio.token) as client:
        project = client.ensure_project("sentiloop")
        tasks = _tasks(3)
        tasks.append(TaskIn(chat_id="chat-plain", text="no guess", meta="m", prediction=None))
        ids = client.import_tasks(project, tasks)
        assert len(ids) == 4
        assert len(set(ids)) == 4
        assert client.task_count(project) == 4

        response = httpx.get(
            f"{labelstudio.url}/api/tasks/{ids[1]}",
            headers={"Authorization": f"Token {labelstudio.token}"},
        )
        task = response.json()
        assert task["data"]["chat_id"] == "chat-1"
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "m-1"
        assert prediction["score"] == pytest.approx(0.75)
        assert prediction["result"][0]["value"]["choices"] == ["positive"]

        # Label Studio does not de-duplicate: a re-import shows up as a second task id.
        (dup,) = client.import_tasks(project, tasks[:1])
        mapping = client.tasks_by_chat_id(project)
        assert mapping["chat-0"] == [ids[0], dup]
        assert mapping["chat-1"] == [ids[1]]
        assert mapping["chat-plain"] == [ids[3]]
        assert len(mapping) == 4


def test_annotations_since_is_incremental(labelstudio: LabelStudioInstance) -> None:
    with LabelStudioClient(labelstudio.url, labelstudio.token) as client:
        project = client.ensure_project("sentiloop")
        t0, t1, t2, t3 = client.import_tasks(project, _tasks(4))
        assert client.annotations_since(project, None) == []

        # A skipped task (cancelled annotation only) must come back too, without a label.
        skipped = httpx.post(
            f"{labelstudio.url}/api/tasks/{t3}/annotations/",
            headers={"Authorization": f"Token {labelstudio.token}"},
            json={"result": [], "was_cancelled": True},
        ).json()["id"]
        # The untouched task is annotated before the first one, so it lies strictly before
        # the cursor (the cursor's own task is re-fetched by design).
        untouched = client.annotate(t2, "neutral")
        first = client.annotate(t0, "negative", lead_time=2.5)
        pulled = client.annotations_since(project, None)
        assert {a.annotation_id for a in pulled} == {skipped, untouched, first}
        by_id = {a.annotation_id: a for a in pulled}
        assert by_id[skipped].cancelled
        assert by_id[skipped].label is None
        assert by_id[first].chat_id == "chat-0"
        assert by_id[first].task_id == t0
        assert by_id[first].label == "negative"
        assert by_id[first].annotator == labelstudio.username
        assert not by_id[first].cancelled
        assert by_id[first].created_at.tzinfo == UTC
        assert by_id[untouched].label == "neutral"
        cursor = next_cursor(pulled, None)
        assert cursor is not None

        second = client.annotate(t1, "positive")
        client.update_annotation(first, "neutral")
        since = client.annotations_since(project, cursor)
        by_id = {a.annotation_id: a for a in since}
        assert set(by_id) == {first, second}
        assert by_id[first].label == "neutral"
        assert by_id[first].updated_at > by_id[first].created_at
        assert by_id[second].chat_id == "chat-1"
        assert by_id[second].label == "positive"

        cursor2 = next_cursor(since, cursor)
        assert cursor2 is not None and cursor2 > cursor
        later = {a.annotation_id for a in client.annotations_since(project, cursor2)}
        assert untouched not in later
        assert skipped not in later


def test_start_twice_reuses_and_stop_from_another_process(
    labelstudio: LabelStudioInstance,
) -> None:
    server = labelstudio.server
    state_before = json.loads(server.state_path.read_text())
    assert server.start() == labelstudio.url
    assert json.loads(server.state_path.read_text()) == state_before
    assert server.running()
    assert server.url == labelstudio.url

    # A new object knows only the data dir, like `sentiloop labelstudio down` would.
    other = LabelStudioServer(
        labelstudio.executable,
        labelstudio.data_dir,
        username=labelstudio.username,
        password=labelstudio.password,
        token=labelstudio.token,
    )
    assert other.running()
    assert other.stop() is True
    assert not server.state_path.exists()
    assert not other.running()
    # refused, or reset by a worker of the server that was still closing: nobody answers
    with pytest.raises((httpx.ConnectError, httpx.ReadError)):
        httpx.get(f"{labelstudio.url}/health", timeout=2)
    assert other.stop() is False


def test_closed_port_raises_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with LabelStudioClient(url, "0" * 40, timeout=5, max_retries=0) as client:
        with pytest.raises(LabelStudioUnavailable) as excinfo:
            client.check()
        assert url in str(excinfo.value)
        assert "SENTILOOP_LABEL_STUDIO_URL" in str(excinfo.value)
        with pytest.raises(LabelStudioUnavailable):
            client.annotations_since(1, None)


def test_bad_token_raises_auth_error(labelstudio: LabelStudioInstance) -> None:
    with LabelStudioClient(labelstudio.url, "f" * 40) as client:
        with pytest.raises(LabelStudioAuthError) as excinfo:
            client.check()
        assert "SENTILOOP_LABEL_STUDIO_TOKEN" in str(excinfo.value)
        assert "f" * 40 not in str(excinfo.value)
        with pytest.raises(LabelStudioAuthError):
            client.ensure_project("sentiloop")
