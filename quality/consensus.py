"""One training label from several annotators' answers, with how far to trust it.

CROWDLAB (cleanlab) weighs each annotator by how often they agree with the others and with a
model, and the model by how well it predicts the consensus; it needs the model's
*out-of-sample* probabilities for the chat (a model that never saw its label). Before a model
exists, or for a chat without such probabilities, the majority vote decides, and its quality
is the share of annotators who gave it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from domain import LABELS
from quality.errors import QualityError

__all__ = ["CROWDLAB", "MAJORITY", "METHODS", "Consensus", "Vote", "consensus"]

logger = logging.getLogger(__name__)

CROWDLAB = "crowdlab"
MAJORITY = "majority"
METHODS: tuple[str, str] = (CROWDLAB, MAJORITY)
"""How a consensus was reached (stored with it)."""


@dataclass(frozen=True)
class Vote:
    """One annotator's answer for one item (a chat). ``order`` ranks answers in time: an
    annotator's latest answer is theirs, and a tied majority goes to the newest answer;
    ``seconds`` is how long they took (Label Studio's lead time), when known."""

    item: int
    annotator: str
    label: str
    order: int = 0
    seconds: float | None = None


@dataclass(frozen=True)
class Consensus:
    """The label an item's annotators agree on. ``quality`` (0..1) is CROWDLAB's consensus
    quality score, or the majority's share; ``agreement`` is always the share of the item's
    annotators who gave ``label``."""

    item: int
    label: str
    quality: float
    agreement: float
    votes: int
    method: str


def consensus(
    votes: Sequence[Vote], probabilities: Mapping[int, Sequence[float]] | None = None
) -> dict[int, Consensus]:
    """The consensus of every item that has a vote. Items with ``probabilities`` (a row in
    ``LABELS`` order) are judged together by CROWDLAB when at least two annotators voted
    among them; the rest by majority."""
    latest = latest_per_annotator(votes)
    probabilities = probabilities or {}
    judged = {item for item in latest if item in probabilities}
    annotators = {a for item in judged for a in latest[item]}
    out: dict[int, Consensus] = {}
    if judged and len(annotators) >= 2:
        out.update(_crowdlab({i: latest[i] for i in sorted(judged)}, probabilities))
    for item, answers in latest.items():
        if item not in out:
            out[item] = _majority(item, answers)
    return out


def latest_per_annotator(votes: Sequence[Vote]) -> dict[int, dict[str, Vote]]:
    """Per item, each annotator's latest vote (an answer changed later replaces theirs)."""
    latest: dict[int, dict[str, Vote]] = {}
    for vote in sorted(votes, key=lambda v: v.order):
        if vote.label not in LABELS:
            raise QualityError(f"unknown label {vote.label!r}; expected one of {LABELS}")
        latest.setdefault(vote.item, {})[vote.annotator] = vote
    return latest


def _majority(item: int, answers: Mapping[str, Vote]) -> Consensus:
    counts: dict[str, int] = {}
    newest: dict[str, int] = {}
    for vote in answers.values():
        counts[vote.label] = counts.get(vote.label, 0) + 1
        newest[vote.label] = max(newest.get(vote.label, vote.order), vote.order)
    label = max(counts, key=lambda lab: (counts[lab], newest[lab]))
    share = counts[label] / len(answers)
    return Consensus(item, label, share, share, len(answers), MAJORITY)


def _crowdlab(
    items: Mapping[int, Mapping[str, Vote]], probabilities: Mapping[int, Sequence[float]]
) -> dict[int, Consensus]:
    import pandas as pd
    from cleanlab.multiannotator import get_label_quality_multiannotator

    names = sorted({a for answers in items.values() for a in answers})
    column = {name: j for j, name in enumerate(names)}
    matrix = np.full((len(items), len(names)), np.nan)
    probs = np.empty((len(items), len(LABELS)))
    order = list(items)
    for row, item in enumerate(order):
        for name, vote in items[item].items():
            matrix[row, column[name]] = LABELS.index(vote.label)
        p = np.asarray(probabilities[item], dtype=float)
        if p.shape != (len(LABELS),) or not np.isfinite(p).all():
            raise QualityError(f"item {item}: expected {len(LABELS)} probabilities, got {p}")
        probs[row] = p / p.sum()
    result = get_label_quality_multiannotator(
        pd.DataFrame(matrix, columns=names), probs, verbose=False
    )["label_quality"]
    out = {}
    for row, item in enumerate(order):
        label = LABELS[int(result["consensus_label"].iloc[row])]
        agree = sum(v.label == label for v in items[item].values()) / len(items[item])
        quality = float(result["consensus_quality_score"].iloc[row])
        out[item] = Consensus(item, label, quality, agree, len(items[item]), CROWDLAB)
    return out
