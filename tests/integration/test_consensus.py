"""Several annotators per chat against a real Label Studio (issue #16, acceptance 1): a task
asked of two receives two annotations from two users, their consensus is stored with its
quality, a consensus too uncertain to train on goes back for one more annotation, and the
project shows the labelling guidelines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator import steps
from orchestrator.annotators import report
from orchestrator.context import Context
from orchestrator.settings import Settings
from store import ChatIn, Store
from tests.conftest import airline_sample
from tests.integration.conftest import LabelStudioInstance

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path: Path, labelstudio: LabelStudioInstance) -> Iterator[Context]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.init()
    texts, _ = airline_sample("pool", 40, seed=11)
    store.add_chats([ChatIn(f"chat-{i}", t, {}, None) for i, t in enumerate(texts)])
    settings = Settings(
        home=tmp_path / "home",
        label_studio_url=labelstudio.url,
        label_studio_token=labelstudio.token,
        project_title="several annotators",
        batch_size=4,
        overlap_share=0.5,  # 2 of the 4 chats are asked of two annotators
        cold_start_sample=100,
    )
    ctx = Context(settings=settings, store=store)
    yield ctx
    ctx.labeling().close()
    store.dispose()


def _step(ctx: Context, name: str) -> dict[str, Any]:
    out = steps.run_step(ctx, name, steps.STEP_FUNCTIONS[name])
    assert out["status"] == "ok", out
    return out


def _ls_task(lsi: LabelStudioInstance, task_id: int) -> dict[str, Any]:
    response = httpx.get(
        f"{lsi.url}/api/tasks/{task_id}", headers={"Authorization": f"Token {lsi.token}"}
    )
    response.raise_for_status()
    return dict(response.json())


def test_overlap_consensus_and_one_more_annotator(
    ctx: Context, labelstudio: LabelStudioInstance
) -> None:
    store, client = ctx.store, ctx.labeling()
    pushed = _step(ctx, "push")
    project = pushed["project"]
    assert (pushed["pushed"], pushed["asked_of_several"]) == (4, 2)
    assert "How to label" in client.instructions(project)
    tasks = store.tasks(project, ["pushed"])
    several = [t for t in tasks if t.overlap == 2]
    single = [t for t in tasks if t.overlap == 1]
    assert len(several) == 2 and len(single) == 2
    for t in several:  # Label Studio asks them of two annotators too
        assert _ls_task(labelstudio, t.ls_task_id or 0)["overlap"] == 2

    ann = {n: client.ensure_user(f"annotator-{n}@example.com") for n in "abc"}
    assert client.ensure_user("annotator-a@example.com") == ann["a"]  # found, not made again
    agreed, split = several
    client.annotate(agreed.ls_task_id or 0, "negative", user=ann["a"], lead_time=4.0)
    client.annotate(split.ls_task_id or 0, "negative", user=ann["a"], lead_time=6.0)
    client.annotate(single[0].ls_task_id or 0, "positive", user=ann["a"], lead_time=2.0)
    _step(ctx, "pull")
    # one answer of the two asked: the task waits, the chat is not trained on yet
    assert {t.id: t.state for t in store.tasks(project)}[agreed.id] == "pushed"
    assert {e.chat_id for e in store.training_examples()} == {single[0].chat_id}

    client.annotate(agreed.ls_task_id or 0, "negative", user=ann["b"], lead_time=8.0)
    client.annotate(split.ls_task_id or 0, "positive", user=ann["b"], lead_time=10.0)
    pulled = _step(ctx, "pull")
    assert pulled["consensus"] == 2 and pulled["reasked"] == 1, pulled
    rows = store.consensus_labels()
    good, bad = rows[agreed.chat_id], rows[split.chat_id]
    assert (good.label, good.quality, good.votes, good.state) == ("negative", 1.0, 2, "accepted")
    assert good.method == "majority"  # no model yet: nothing out-of-sample to weigh them by
    assert (bad.quality, bad.state) == (0.5, "reask")
    # the split chat went back to Label Studio for a third annotator, and waits for one
    assert _ls_task(labelstudio, split.ls_task_id or 0)["overlap"] == 3
    assert not _ls_task(labelstudio, split.ls_task_id or 0)["is_labeled"]
    assert {t.id: (t.state, t.overlap) for t in store.tasks(project)}[split.id] == ("pushed", 3)
    labels = {e.chat_id: e.label for e in store.training_examples()}
    assert labels == {single[0].chat_id: "positive", agreed.chat_id: "negative"}
    assert _step(ctx, "pull").get("reasked", 0) == 0  # asked once, not again and again

    client.annotate(split.ls_task_id or 0, "negative", user=ann["c"], lead_time=5.0)
    _step(ctx, "pull")
    third = store.consensus_labels()[split.chat_id]
    assert (third.label, third.votes, third.state) == ("negative", 3, "accepted")
    assert third.quality == pytest.approx(2 / 3)
    labels = {e.chat_id: e.label for e in store.training_examples()}
    assert labels[split.chat_id] == "negative"

    got = report(ctx)
    by_votes = sorted(got.annotators, key=lambda a: a.labels)
    assert [a.labels for a in by_votes] == [1, 2, 3]
    a = by_votes[-1]
    assert a.agreement == 1.0 and a.shared_items == 2 and a.median_seconds == 4.0
    b = by_votes[1]
    assert b.agreement == 0.5 and b.distribution == {"negative": 1, "neutral": 0, "positive": 1}
    assert got.states == {"accepted": 2}
    assert got.alpha is not None and got.weeks and got.weeks[-1].alpha_to_date == got.alpha
