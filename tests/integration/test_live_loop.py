"""The label-driven loop with a real Label Studio: the service as Label Studio's ML backend
(connect, predictions, model versions) and its webhooks driving pulls and retrains through a
real Celery worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from domain import LABELS
from labeling import LabelStudioClient, TaskIn, retrieve_predictions
from tests.conftest import airline_sample
from tests.integration.conftest import LabelStudioInstance, free_port
from tests.integration.loop import Loop, make_loop
from tests.integration.serve import Installation, make_installation, serving, wait_until

if TYPE_CHECKING:
    from training import CheckpointInfo

pytestmark = pytest.mark.integration


def _predictions(ls: LabelStudioInstance, project: int) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{ls.url}/api/predictions/",
        params={"project": project},
        headers={"Authorization": f"Token {ls.token}"},
        timeout=30,
    )
    r.raise_for_status()
    body = r.json()
    return list(body["results"] if isinstance(body, dict) else body)


def test_label_studio_connects_the_backend_and_asks_the_production_version(
    tmp_path: Path, tuned_checkpoint: CheckpointInfo, labelstudio: LabelStudioInstance
) -> None:
    install: Installation = make_installation(tmp_path / "home", tuned_checkpoint.path, 2)
    port = free_port()
    install.env.update(
        {
            "SENTILOOP_LABEL_STUDIO_URL": labelstudio.url,
            "SENTILOOP_LABEL_STUDIO_TOKEN": labelstudio.token,
            "SENTILOOP_SERVE_PORT": str(port),
            "SENTILOOP_PROJECT_TITLE": "backend test",
        }
    )
    texts, _ = airline_sample("dev", 30, seed=4)
    with (
        serving(install, port) as served,
        LabelStudioClient(labelstudio.url, labelstudio.token) as client,
    ):
        # basic auth is on by default: without an API key as the password, nothing
        assert httpx.post(f"{served.url}/predict", json={"tasks": []}).status_code == 401
        project = client.ensure_project("backend test")
        tasks = [TaskIn(chat_id=f"c{i}", text=t, meta="") for i, t in enumerate(texts)]
        task_ids = client.import_tasks(project, tasks)

        connected = install.cli("labelstudio", "connect")  # Label Studio validates it
        assert connected.returncode == 0, connected.stdout + connected.stderr
        assert "connected to project" in connected.stdout

        # an annotator opens a task that has no prediction: Label Studio asks production
        opened = httpx.get(
            f"{labelstudio.url}/api/tasks/{task_ids[0]}",
            headers={"Authorization": f"Token {labelstudio.token}"},
            timeout=60,
        ).json()
        (prediction,) = opened["predictions"]
        assert prediction["model_version"] == "v1"
        (item,) = prediction["result"]
        assert (item["from_name"], item["to_name"], item["type"]) == (
            "sentiment",
            "text",
            "choices",
        )
        assert item["value"]["choices"][0] in LABELS and 0.33 < prediction["score"] <= 1

        # the data manager's "retrieve predictions" on the page: one per task, from v1
        retrieve_predictions(client, project, task_ids)
        by_task = _by_task(_predictions(labelstudio, project))
        assert {t: sorted(v) for t, v in by_task.items()} == {t: ["v1"] for t in task_ids}

        # after a promotion the version name changes, so Label Studio asks again
        install.store.promote(2, actor="test")
        wait_until(lambda: served.ready()["model_version"] == 2, 30, "v2 in service")
        retrieve_predictions(client, project, task_ids)
        by_task = _by_task(_predictions(labelstudio, project))
        assert {t: sorted(v) for t, v in by_task.items()} == {t: ["v1", "v2"] for t in task_ids}

        # connecting again updates the same backend (and gives Label Studio a new key)
        again = install.cli("labelstudio", "connect")
        assert again.returncode == 0 and "updated on project" in again.stdout, again.stderr
        assert [k.name for k in install.store.api_keys() if k.revoked_at is None] == [
            "tests",
            "labelstudio",
        ]

        # an annotation: Label Studio's webhook asks the loop for a pull (no worker here)
        assert install.store.requested_at("pull") is None
        client.annotate(task_ids[0], "negative")
        wait_until(lambda: install.store.requested_at("pull") is not None, 30, "the webhook")
    assert "Traceback" not in served.log_text()


def _by_task(predictions: list[dict[str, Any]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for p in predictions:
        out.setdefault(int(p["task"]), []).append(str(p["model_version"]))
    return out


# -- webhooks drive pulls and retrains ------------------------------------------------------


def _annotate(loop: Loop, n: int) -> list[int]:
    """Answer ``n`` open tasks with their gold labels; the annotation ids (their labels
    are remembered in ``GIVEN``)."""
    store = loop.store()
    project = loop.client().ensure_project(loop.env["SENTILOOP_PROJECT_TITLE"])
    open_tasks = store.tasks(project, states=["pushed"])[:n]
    chats = store.chats_by_id([t.chat_id for t in open_tasks])
    store.dispose()
    assert len(open_tasks) == n
    ids = []
    for t in open_tasks:
        label = loop.gold[chats[t.chat_id].source_id]
        ids.append(loop.client().annotate(int(t.ls_task_id or 0), label))
        GIVEN[ids[-1]] = label
    return ids


GIVEN: dict[int, str] = {}


def _runs(loop: Loop, step: str) -> list[Any]:
    store = loop.store()
    try:
        return [r for r in store.runs(limit=500, step=step)]
    finally:
        store.dispose()


SETTLE = 20


def test_annotation_events_drive_pulls_and_one_retrain_per_burst(
    tmp_path: Path, airline: Path, labelstudio: LabelStudioInstance
) -> None:
    port = free_port()
    loop = make_loop(
        tmp_path,
        airline,
        labelstudio,
        {
            "SENTILOOP_BATCH_SIZE": "60",
            "SENTILOOP_RETRAIN_AFTER_LABELS": "5",
            # long enough for the burst of 20 to land on a loaded machine: one retrain for all
            "SENTILOOP_RETRAIN_SETTLE_SECONDS": str(SETTLE),
            "SENTILOOP_SERVE_PORT": str(port),
            "SENTILOOP_SERVE_POLL_SECONDS": "0.5",
            "SENTILOOP_ML_BACKEND_AUTH": "false",
            # every candidate passes the gate: on 45 labels the dev macro-F1 of an incremental
            # version is a coin toss, and a failed gate asks for a full retrain at once
            "SENTILOOP_GATE_TOLERANCE": "1",
            "SENTILOOP_GATE_MAX_CLASS_DROP": "1",
        },
    )
    install = Installation(loop.home, loop.env, "", loop.store())
    try:
        assert loop.cli("init").returncode == 0
        assert loop.cli("ingest", str(loop.pool)).returncode == 0
        loop.start_worker(concurrency=2)  # a pull is not held up by a retrain
        first = loop.cli("cycle")  # pushes 60 tasks
        assert first.returncode == 0, first.stdout + first.stderr + loop.worker_logs()
        _annotate(loop, 24)
        second = loop.cli("cycle")  # pulls them, trains v1 (full: nothing to start from)
        assert second.returncode == 0, second.stdout + second.stderr + loop.worker_logs()
        store = install.store
        assert [(v.number, v.mode, v.status) for v in store.versions()] == [
            (1, "full", "production")
        ]

        with serving(install, port, name="serve") as served:
            connected = loop.cli("labelstudio", "connect")
            assert connected.returncode == 0, connected.stdout + connected.stderr

            # one annotation: pulled at once, no cycle running
            cycles_before = {r.cycle_id for r in _runs(loop, "push")}
            (single,) = _annotate(loop, 1)
            wait_until(lambda: _pulled(store, single), 60, "the webhook's pull")
            assert {r.cycle_id for r in _runs(loop, "push")} == cycles_before
            assert any(r.trigger == "webhook" for r in _runs(loop, "pull"))

            # a burst of 20: one retrain, on all of them
            burst = _annotate(loop, 20)
            wait_until(
                lambda: any(r.status == "running" for r in _runs(loop, "retrain")),
                120,
                "the retrain the labels asked for",
            )
            # the annotator corrects a label while that version trains
            edited = burst[0]
            loop.client().update_annotation(edited, next(x for x in LABELS if x != GIVEN[edited]))
            wait_until(lambda: store.version(2) is not None, 300, "v2")
            wait_until(lambda: _revision(store, edited) == 2, 60, "the edit to be pulled")
            time.sleep(SETTLE + 2)  # the settle time and then some: nothing more may start
            retrains = [r for r in _runs(loop, "retrain") if r.trigger != "beat"]
            trained = [r for r in retrains if r.status == "ok" and "version" in r.counts]
            assert [r.counts["version"] for r in trained] == [2, 1]  # newest first
            v2 = store.version(2)
            assert v2 is not None and v2.mode == "incremental"
            assert {single, *burst} <= set(v2.annotation_ids)
            record = str(_record(store, edited))
            assert v2.annotation_revisions[record] == 1  # it read the label before the edit
            wait_until(lambda: served.ready()["model_version"] == 2, 60, "v2 in service")

        # the service is gone: Label Studio's webhook for this label fails and is never
        # sent again; the scheduled cycle pulls it and the next version learns the edit too
        (late,) = _annotate(loop, 1)
        time.sleep(2)
        assert not _pulled(store, late)
        third = loop.cli("cycle")
        assert third.returncode == 0, third.stdout + third.stderr + loop.worker_logs()
        assert _pulled(store, late)
        v3 = store.version(3)
        assert v3 is not None and v3.mode == "incremental"
        assert v3.annotation_revisions[record] == 2
        assert str(_record(store, late)) in v3.annotation_revisions
    finally:
        install.store.dispose()
        loop.close()


def _pulled(store: Any, annotation_id: int) -> bool:
    return annotation_id in {e.annotation_id for e in store.training_examples()}


def _revision(store: Any, annotation_id: int) -> int:
    return next(
        (e.revision for e in store.training_examples() if e.annotation_id == annotation_id), 0
    )


def _record(store: Any, annotation_id: int) -> int:
    """The store's id of a Label Studio annotation (what lineage records)."""
    return next(e.record_id for e in store.training_examples() if e.annotation_id == annotation_id)
