"""Likely label errors, sent for review (issue #16).

After each new version, every labelled chat is checked against the opinion a model had of it
*before anyone labelled it* (the newest prediction stored while it was unlabelled: a model
that never trained on its label, so the opinion is out of sample). cleanlab's confident
learning finds the labels that opinion contradicts (as many as it estimates are wrong); the
most likely, at most SENTILOOP_REVIEW_SIZE, become tasks in a separate Label Studio project,
"<project> review", showing the label given and the model's suggestion as a pre-annotation.
A reviewer's answer replaces the chat's label for every later retrain (store.annotations).
Each chat is reviewed once. Chats labelled before any model existed (the cold-start batch)
have no such opinion and are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labeling import LabelStudioClient
from orchestrator.context import Context
from quality import likely_errors
from store import REVIEW, Chat, LabelTask

REVIEW_GUIDELINES = """<h3>Reviewing a label</h3>
<p>Another annotator labelled this chat, and the model disagrees with them. The line above
the chat shows both. Read the chat and choose the right label yourself, by the same
guidelines as in the labelling project: your answer replaces the earlier label.</p>
"""


@dataclass(frozen=True)
class Flag:
    """A label that is probably wrong: the label given, what the model said before anyone
    labelled the chat, and which version said it."""

    chat_id: int
    label: str
    suggestion: str
    confidence: float
    version: int


def review_title(ctx: Context) -> str:
    return f"{ctx.settings.project_title} review"


def flags(ctx: Context, limit: int) -> list[Flag]:
    """The likely label errors among the chats not reviewed yet, most likely first."""
    store = ctx.store
    done = store.reviewed_chats()
    examples = [e for e in store.training_examples() if e.chat_id not in done]
    ids = [e.chat_id for e in examples]
    answers, predictions = store.answers(ids), store.predictions_of(ids)
    rows = []
    for e in examples:
        first = min(a.pulled_at for a in answers[e.chat_id])
        before = [p for p in predictions.get(e.chat_id, []) if p.created_at <= first]
        if before:
            rows.append((e, before[-1]))
    if not rows:
        return []
    found = likely_errors(
        [e.label for e, _ in rows],
        [[p.p_negative, p.p_neutral, p.p_positive] for _, p in rows],
        limit,
    )
    return [
        Flag(
            rows[i][0].chat_id,
            rows[i][0].label,
            rows[i][1].label,
            max(rows[i][1].p_negative, rows[i][1].p_neutral, rows[i][1].p_positive),
            rows[i][1].model_version,
        )
        for i in found
    ]


def push_reviews(ctx: Context) -> dict[str, Any]:
    """After a version newer than the last one checked: flag and push its review tasks. Any
    review task reserved but not imported yet (a crash) is imported too."""
    settings, store = ctx.settings, ctx.store
    newest = store.newest_version()
    due = newest is not None and newest.number > store.reviewed_through()
    if settings.review_size == 0 or not (due or store.review_counts().get("pending")):
        return {}
    client = ctx.labeling()
    project = client.ensure_project(review_title(ctx), "Labels to check", REVIEW_GUIDELINES)
    instance = client.project_identity(project)
    flagged = 0
    if due and newest is not None:
        found = flags(ctx, settings.review_size)
        for version in sorted({f.version for f in found}):
            group = [f for f in found if f.version == version]
            flagged += store.reserve_tasks(
                project,
                [f.chat_id for f in group],
                strategy=REVIEW,
                model_version=version,
                selection_scores=[f.confidence for f in group],
                instance=instance,
            )
        store.mark_reviewed(newest.number)
    labels = {e.chat_id: e.label for e in store.training_examples()}

    def meta(task: LabelTask, chat: Chat) -> str:
        given = labels.get(chat.id or 0, "?")
        said = store.prediction_for([chat.id or 0], task.model_version or 0).get(chat.id or 0)
        if said is None:
            return f"review: labelled {given}"
        confidence = max(said.p_negative, said.p_neutral, said.p_positive)
        return (
            f"review: labelled {given}; before it was labelled, model v{task.model_version} "
            f"read it as {said.label} ({confidence:.0%})"
        )

    pushed = _push(ctx, project, instance, meta)
    return {"flagged": flagged, "pushed": pushed} if flagged or pushed else {}


def _push(ctx: Context, project: int, instance: str, meta: Any) -> int:
    from orchestrator.step_sync import push_pending

    return push_pending(ctx, project, instance, meta)


def pull_reviews(ctx: Context, client: LabelStudioClient) -> dict[str, Any]:
    """The reviewers' answers, when there is a review project with tasks of ours."""
    from orchestrator.step_sync import pull_project

    if not ctx.store.review_counts():
        return {}
    project = client.find_project(review_title(ctx))
    if project is None:
        return {}
    counts = pull_project(ctx, client, project, client.project_identity(project))
    return {k: counts[k] for k in ("new", "updated") if counts.get(k)}
