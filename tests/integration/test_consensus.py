"""Several annotators per chat and label review against a real Label Studio (issue #16,
acceptance 1): a task asked of two receives two annotations from two users, their consensus
is stored with its quality, a consensus too uncertain to train on goes back for one more
annotation, the project shows the labelling guidelines; a flagged label becomes a review
task and the reviewer's answer is what the next retrain learns."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain import LABELS
from orchestrator import steps
from orchestrator.annotators import report
from orchestrator.context import Context
from orchestrator.settings import Settings
from store import ChatIn, PredictionIn, Store
from tests.conftest import airline_sample, version_row
from tests.integration.conftest import LabelStudioInstance

pytestmark = pytest.mark.integration


def _context(tmp_path: Path, lsi: LabelStudioInstance, **overrides: Any) -> Iterator[Context]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.init()
    texts, _ = airline_sample("pool", 40, seed=11)
    store.add_chats([ChatIn(f"chat-{i}", t, {}, None) for i, t in enumerate(texts)])
    settings = Settings(
        home=tmp_path / "home",
        label_studio_url=lsi.url,
        label_studio_token=lsi.token,
        project_title="several annotators",
        cold_start_sample=100,
        **overrides,
    )
    ctx = Context(settings=settings, store=store)
    yield ctx
    ctx.labeling().close()
    store.dispose()


@pytest.fixture
def ctx(tmp_path: Path, labelstudio: LabelStudioInstance) -> Iterator[Context]:
    # 2 of the 4 chats of a batch are asked of two annotators
    yield from _context(tmp_path, labelstudio, batch_size=4, overlap_share=0.5)


@pytest.fixture
def reviewed(tmp_path: Path, labelstudio: LabelStudioInstance) -> Iterator[Context]:
    yield from _context(
        tmp_path, labelstudio, batch_size=12, review_size=5, min_train_labels=5,
        train_epochs=1, train_min_steps=1,
    )  # fmt: skip


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
    least = ctx.settings.consensus_min_quality
    assert (good.label, good.votes, good.state, good.agreement) == ("negative", 2, "accepted", 1)
    # no model yet: Dawid-Skene starts each chat from the classes' frequency
    assert good.method == "dawid-skene" and good.model_version is None
    assert good.quality >= least > bad.quality and bad.agreement == 0.5
    assert bad.state == "reask"
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
    assert third.agreement == pytest.approx(2 / 3) and bad.quality < least <= third.quality
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


def _held_out(chat_id: int) -> bool:  # orchestrator.evaluation.eval_set's fifth
    return hashlib.sha256(str(chat_id).encode()).digest()[0] % 5 == 0


def test_a_flagged_label_is_reviewed_and_the_review_is_learned(
    reviewed: Context, labelstudio: LabelStudioInstance
) -> None:
    ctx, store, client = reviewed, reviewed.store, reviewed.labeling()
    project = _step(ctx, "push")["project"]
    tasks = store.tasks(project, ["pushed"])
    assert len(tasks) == 12 and _step(ctx, "push").get("review") is None  # no version yet
    # what a model read in each chat before anyone labelled it (stored as the score step
    # would): confident, and right but for two chats the annotator gets wrong
    opinion = {t.chat_id: LABELS[i % 3] for i, t in enumerate(tasks)}
    rows = []
    for c, lab in opinion.items():
        p = [0.8 if x == lab else 0.1 for x in LABELS]
        rows.append(PredictionIn(c, (p[0], p[1], p[2]), lab, 0.8, 0.2))
    store.add_predictions(1, rows)
    wrong = [t for t in tasks if not _held_out(t.chat_id)][:2]
    given = {t.chat_id: opinion[t.chat_id] for t in tasks}
    for t in wrong:
        given[t.chat_id] = LABELS[(LABELS.index(opinion[t.chat_id]) + 1) % 3]
    first_answer = {}
    for t in tasks:
        first_answer[t.chat_id] = client.annotate(t.ls_task_id or 0, given[t.chat_id])
    _step(ctx, "pull")
    store.add_version(version_row(1))  # a new version: its labels are checked

    pushed = _step(ctx, "push")
    assert pushed["review"] == {"flagged": 2, "pushed": 2}, pushed
    assert store.review_counts() == {"pushed": 2}
    review_project = client.find_project("several annotators review")
    assert review_project is not None and review_project != project
    queue = store.tasks(review_project, ["pushed"])
    assert {t.chat_id for t in queue} == {t.chat_id for t in wrong}
    first = queue[0]
    shown = _ls_task(labelstudio, first.ls_task_id or 0)
    assert shown["data"]["meta"].startswith(f"review: labelled {given[first.chat_id]}; ")
    assert f"model v1 read it as {opinion[first.chat_id]} (80%)" in shown["data"]["meta"]
    assert "Reviewing a label" in client.instructions(review_project)
    assert _step(ctx, "push").get("review") is None  # this version's labels were checked

    review_id = client.annotate(first.ls_task_id or 0, opinion[first.chat_id])
    pulled = _step(ctx, "pull")
    assert pulled["review"] == {"new": 1}, pulled
    labels = {e.chat_id: e.label for e in store.training_examples()}
    assert labels[first.chat_id] == opinion[first.chat_id]  # the reviewer's answer
    assert store.review_counts() == {"pushed": 1, "annotated": 1}

    retrained = _step(ctx, "retrain")
    version = store.version(retrained["version"])
    assert version is not None
    assert review_id in version.annotation_ids
    assert first_answer[first.chat_id] not in version.annotation_ids
