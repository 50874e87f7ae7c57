"""Several annotators per chat (issue #16): which chats of a batch to ask of several, the
consensus of their answers, and one more annotator where it is too uncertain to train on.

The verdicts come from :mod:`quality` by SENTILOOP_CONSENSUS_METHOD (Dawid-Skene by default),
with the out-of-sample probabilities of the model that chose the chat (it had never seen the
chat's label) where there is one. They are re-derived from the store's answers each time,
so a repeated or lost run changes nothing: a verdict that did not change keeps its row.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from orchestrator.context import Context
from quality import Consensus, Vote, consensus
from store import Answer, AnswerGroup, ConsensusLabel


def overlaps(ctx: Context, chat_ids: Sequence[int], model_version: int | None) -> dict[int, int]:
    """The chats of a batch to ask of SENTILOOP_OVERLAP annotators: the
    SENTILOOP_OVERLAP_SHARE of it the model is least sure of (the batch's first ones when
    there is no model yet)."""
    settings = ctx.settings
    n = math.ceil(settings.overlap_share * len(chat_ids))
    if n == 0:
        return {}
    order = list(chat_ids)
    if model_version is not None:
        preds = ctx.store.prediction_for(order, model_version)
        order.sort(key=lambda c: -(preds[c].uncertainty if c in preds else 0.0))
    return {c: settings.overlap for c in order[:n]}


def votes(answers: Sequence[Answer]) -> list[Vote]:
    """The quality package's view of answers: who said what, in time order."""
    ordered = sorted(answers, key=lambda a: (a.updated_at, a.ls_annotation_id))
    return [
        Vote(a.chat_id, a.voter, a.label, order=i, seconds=a.lead_time)
        for i, a in enumerate(ordered)
    ]


def _out_of_sample(ctx: Context, groups: Sequence[AnswerGroup]) -> dict[int, list[float]]:
    """Each chat's probabilities from the model that chose it, before anyone labelled it."""
    by_version: dict[int, list[int]] = {}
    for g in groups:
        if g.task is not None and g.task.model_version is not None:
            by_version.setdefault(g.task.model_version, []).append(g.chat_id)
    out: dict[int, list[float]] = {}
    for version, chat_ids in by_version.items():
        for chat_id, p in ctx.store.prediction_for(chat_ids, version).items():
            out[chat_id] = [p.p_negative, p.p_neutral, p.p_positive]
    return out


def refresh(ctx: Context) -> dict[str, int]:
    """Reach the consensus of every chat two or more annotators answered and store it:
    ``accepted`` (trained on) at SENTILOOP_CONSENSUS_MIN_QUALITY or above, when an annotator
    gave its label; else ``reask`` while fewer than SENTILOOP_MAX_ANNOTATIONS answered and its
    task can ask again, else ``disputed`` (left out of training, for a person to settle)."""
    settings, store = ctx.settings, ctx.store
    groups = store.answer_groups()
    probabilities = _out_of_sample(ctx, groups)
    verdicts = consensus(
        votes([a for g in groups for a in g.answers]), probabilities, settings.consensus_method
    )
    rows = [_row(g, verdicts[g.chat_id], settings.consensus_min_quality,
                 settings.max_annotations) for g in groups]  # fmt: skip
    for row, g in zip(rows, groups, strict=True):
        row.model_version = g.task.model_version if g.chat_id in probabilities and g.task else None
    changed = store.save_consensus(rows)
    states = Counter(r.state for r in rows)
    return {"consensus": len(rows), "changed": changed, **{s: states[s] for s in sorted(states)}}


def _row(group: AnswerGroup, verdict: Consensus, min_quality: float, most: int) -> ConsensusLabel:
    state = "accepted"
    # a model may outvote every annotator (CROWDLAB, Dawid-Skene on a split): not a label to
    # train on
    if verdict.quality < min_quality or verdict.agreement == 0:
        can_ask = group.task is not None and group.task.ls_task_id is not None
        state = "reask" if can_ask and group.voters < most else "disputed"
    return ConsensusLabel(
        chat_id=group.chat_id,
        label=verdict.label,
        quality=round(verdict.quality, 6),
        agreement=round(verdict.agreement, 6),
        votes=verdict.votes,
        method=verdict.method,
        answers=sorted([a.record_id, a.revision] for a in group.answers),
        state=state,
    )


def reask(ctx: Context, instance: str) -> int:
    """Ask one more annotator for every chat whose consensus is too uncertain and whose task
    lives in this Label Studio (a task already asking for more is left alone)."""
    store = ctx.store
    wanted = {c for c, row in store.consensus_labels().items() if row.state == "reask"}
    if not wanted:
        return 0
    client, asked = ctx.labeling(), 0
    for group in store.answer_groups():
        task = group.task
        if group.chat_id not in wanted or task is None or task.ls_task_id is None:
            continue
        if task.ls_instance != instance or task.overlap > group.voters:
            continue
        client.set_overlap(task.ls_task_id, group.voters + 1)
        store.ask_more(task.id or 0, group.voters + 1)
        asked += 1
    return asked


def settle(ctx: Context, instance: str) -> dict[str, Any]:
    """After a pull: the consensus of what came in, and more annotators where it is needed."""
    counts: dict[str, Any] = refresh(ctx)
    counts["reasked"] = reask(ctx, instance)
    return counts
