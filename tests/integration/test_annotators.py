"""The loop under annotators and operators who behave as people do, against a real Label
Studio (issue #12, items 1, 3 and 4): skipped and deleted tasks never block push, a chat
whose text changed is not trained on its old label, and a reset Label Studio is refused
until `resync` re-creates the unanswered tasks there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labeling import copy_data_dir
from orchestrator import steps
from orchestrator.context import Context
from orchestrator.errors import LabelStudioMismatch
from orchestrator.settings import Settings
from store import ChatIn, Store
from tests.conftest import airline_sample
from tests.integration.conftest import LabelStudioInstance, make_server

pytestmark = pytest.mark.integration

TITLE = "annotators behave as people do"


_OPEN: list[Context] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().labeling().close()


def _ctx(store: Store, tmp_path: Path, url: str, token: str, **overrides: Any) -> Context:
    settings = Settings(
        home=tmp_path / "home",
        label_studio_url=url,
        label_studio_token=token,
        project_title=TITLE,
        batch_size=6,
        max_open_tasks=6,
        cold_start_sample=200,
        **overrides,
    )
    ctx = Context(settings=settings, store=store)
    _OPEN.append(ctx)
    return ctx


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.init()
    texts, _ = airline_sample("pool", 60, seed=7)
    store.add_chats([ChatIn(f"chat-{i}", t, {}, None) for i, t in enumerate(texts)])
    yield store
    store.dispose()


def _step(ctx: Context, name: str) -> dict[str, Any]:
    return steps.run_step(ctx, name, steps.STEP_FUNCTIONS[name])


def _ls_tasks_per_chat(ctx: Context, project: int) -> dict[str, int]:
    return {c: len(ids) for c, ids in ctx.labeling().tasks_by_chat_id(project).items()}


def test_skipped_and_deleted_tasks_never_block_push_and_skips_are_asked_again(
    store: Store, tmp_path: Path, labelstudio: LabelStudioInstance
) -> None:
    ctx = _ctx(store, tmp_path, labelstudio.url, labelstudio.token)
    first = _step(ctx, "push")
    project = first["project"]
    assert first["pushed"] == 6
    tasks = store.tasks(project, ["pushed"])
    client = ctx.labeling()
    client.skip(tasks[0].ls_task_id or 0)
    client.skip(tasks[1].ls_task_id or 0)
    client.delete_task(tasks[2].ls_task_id or 0)
    client.annotate(tasks[3].ls_task_id or 0, "negative")
    pulled = _step(ctx, "pull")
    assert pulled["new"] == 3 and pulled["deleted_tasks"] == 1
    assert store.task_states() == {"skipped": 2, "deleted": 1, "annotated": 1, "pushed": 2}
    assert tasks[2].chat_id in store.unlabelled_chat_ids()  # released: may be chosen again

    # at the cap of 6 open tasks before; only the 2 really waiting count now
    second = _step(ctx, "push")
    assert second["status"] == "ok" and second["pushed"] == 4, second

    # a day later (here: at once) the skipped chats are asked again, in new tasks
    later = _ctx(store, tmp_path, labelstudio.url, labelstudio.token, skip_requeue_seconds=1e-6)
    client.annotate(store.tasks(project, ["pushed"])[0].ls_task_id or 0, "positive")
    _step(later, "pull")
    third = _step(later, "push")
    assert third["requeued"] == 2 and third["reconciled"] == 2, third
    states = store.task_states()
    assert states["requeued"] == 2 and states["pushed"] == 7  # 5 waiting + 2 asked again
    requeued_chats = {t.chat_id for t in store.tasks(project, ["requeued"])}
    assert requeued_chats == {tasks[0].chat_id, tasks[1].chat_id}
    assert set(_ls_tasks_per_chat(ctx, project).values()) == {1}  # never two tasks for a chat
    # the skip is history, not lost
    assert store.counts()["annotations"] == 4


def test_a_chat_whose_text_changed_leaves_the_training_set_and_can_be_asked_again(
    store: Store, tmp_path: Path, labelstudio: LabelStudioInstance
) -> None:
    ctx = _ctx(store, tmp_path, labelstudio.url, labelstudio.token)
    project = _step(ctx, "push")["project"]
    tasks = store.tasks(project, ["pushed"])
    for task in tasks:
        ctx.labeling().annotate(task.ls_task_id or 0, "negative")
    _step(ctx, "pull")
    assert len(store.training_examples()) == 6
    changed = store.chats_by_id([tasks[0].chat_id])[tasks[0].chat_id]
    store.add_chats([ChatIn(changed.source_id, "thank you, all sorted now!", {}, None)])
    examples = store.training_examples()
    assert len(examples) == 5 and changed.id not in {e.chat_id for e in examples}
    assert store.counts()["annotations"] == 6  # the old label is kept, as history
    assert [t.state for t in store.tasks(project) if t.chat_id == changed.id] == ["superseded"]
    assert changed.id in store.unlabelled_chat_ids()
    # an annotator still answering the old task later does not bring the old text back
    ctx.labeling().annotate(tasks[0].ls_task_id or 0, "negative")
    _step(ctx, "pull")
    assert changed.id not in {e.chat_id for e in store.training_examples()}


def test_a_reset_label_studio_is_refused_until_resync_recreates_the_open_tasks(
    store: Store,
    tmp_path: Path,
    labelstudio: LabelStudioInstance,
    labelstudio_template: Path,
) -> None:
    ctx = _ctx(store, tmp_path, labelstudio.url, labelstudio.token)
    project = _step(ctx, "push")["project"]
    tasks = store.tasks(project, ["pushed"])
    for task in tasks[:2]:
        ctx.labeling().annotate(task.ls_task_id or 0, "positive")
    _step(ctx, "pull")
    before = {(a.chat_id, a.label) for a in store.training_examples()}
    assert len(before) == 2

    # Label Studio is reset: a fresh server (ids start again at 1) at another URL
    fresh_dir = tmp_path / "fresh-labelstudio"
    copy_data_dir(labelstudio_template, fresh_dir)
    fresh = make_server(labelstudio.executable, fresh_dir, log_path=tmp_path / "fresh.log")
    url = fresh.start(timeout=120)
    try:
        moved = _ctx(store, tmp_path, url, labelstudio.token)
        for name in ("push", "pull"):
            with pytest.raises(LabelStudioMismatch, match="labelstudio resync"):
                _step(moved, name)
        # an annotation on the new server must not "update" an old one with the same id
        new_project = moved.labeling().ensure_project(TITLE)
        result = steps.run_step(moved, "push", steps.resync)
        assert result["recreated"] == 4 and result["pushed"] == 4
        assert sorted(_ls_tasks_per_chat(moved, new_project).values()) == [1, 1, 1, 1]
        reopened = store.tasks(new_project, ["pushed"])
        moved.labeling().annotate(reopened[0].ls_task_id or 0, "neutral")
        pulled = _step(moved, "pull")
        assert (pulled["new"], pulled["updated"]) == (1, 0)
        after = {(a.chat_id, a.label) for a in store.training_examples()}
        assert before < after and len(after) == 3  # every label kept, none duplicated
        assert store.counts()["annotations"] == 3
    finally:
        fresh.stop()
