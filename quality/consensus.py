"""One training label from several annotators' answers, with how far to trust it.

Three methods, chosen by name (``METHODS``):

* ``dawid-skene`` (the default): Dawid and Skene's EM estimates, per annotator, how often they
  give each label for each true class (a confusion matrix, so "says neutral when it is
  negative" is learned, not just "is right 80% of the time"), and each chat's posterior over
  the true class, starting from the model's *out-of-sample* probabilities for that chat (a
  model that never saw its label) where there are some, else from the classes' frequency.
  The quality is the posterior probability of the label: the chance it is right.
* ``crowdlab`` (cleanlab): weighs each annotator by agreement with the others and the model
  by agreement with the consensus, with the model's probabilities temperature-scaled to the
  annotators (cleanlab's ``calibrate_probs``). On chats the model is weaker than the
  annotators on, and on skewed classes, it leans on the model: measured in
  ``docs/benchmarks/label_quality.md``.
* ``majority``: the most given label; its quality is the share of annotators who gave it.

A chat one annotator answered always keeps that answer (majority of one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from domain import CONSENSUS_METHODS, LABELS
from quality.errors import QualityError

__all__ = ["CROWDLAB", "DAWID_SKENE", "MAJORITY", "METHODS", "Consensus", "Vote", "consensus"]

logger = logging.getLogger(__name__)

METHODS = CONSENSUS_METHODS
"""How a consensus is reached (a setting, and stored with each consensus)."""
DAWID_SKENE, CROWDLAB, MAJORITY = CONSENSUS_METHODS

# Dawid-Skene's prior on each row of an annotator's confusion matrix, as pseudo-answers: as
# if each had been seen answering eight times right and once each way wrong (80% right), so
# an annotator with few answers is judged as a reasonable one, not from noise (chosen on
# simulated annotators over pool chats: the best of 3..15 on 20-chat batches, the same on
# 1,000)
_PRIOR_RIGHT, _PRIOR_WRONG = 8.0, 1.0
_MAX_ROUNDS, _TOLERANCE = 200, 1e-7


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
    votes: Sequence[Vote],
    probabilities: Mapping[int, Sequence[float]] | None = None,
    method: str = DAWID_SKENE,
) -> dict[int, Consensus]:
    """The consensus of every item that has a vote. ``probabilities`` (a row in ``LABELS``
    order per item, from a model that never saw the item's labels) inform ``dawid-skene``
    and ``crowdlab``; ``crowdlab`` judges only items that have them (the rest by majority).
    Items one annotator answered keep that answer."""
    if method not in METHODS:
        raise QualityError(f"unknown consensus method {method!r}; expected one of {METHODS}")
    latest = latest_per_annotator(votes)
    probabilities = probabilities or {}
    for item, p in probabilities.items():
        if item in latest:
            _probability_row(item, p)
    several = {item: answers for item, answers in latest.items() if len(answers) >= 2}
    out: dict[int, Consensus] = {}
    if method == DAWID_SKENE and several:
        out.update(_dawid_skene(several, probabilities))
    elif method == CROWDLAB:
        judged = {item: several[item] for item in sorted(several) if item in probabilities}
        if judged and len({a for answers in judged.values() for a in answers}) >= 2:
            out.update(_crowdlab(judged, probabilities))
    for item, answers in latest.items():
        if item not in out:
            out[item] = _majority(item, answers)
    return out


def _probability_row(item: int, p: Sequence[float]) -> npt.NDArray[np.float64]:
    row = np.asarray(p, dtype=float)
    if row.shape != (len(LABELS),) or not np.isfinite(row).all() or (row < 0).any():
        raise QualityError(f"item {item}: expected {len(LABELS)} probabilities, got {row}")
    if row.sum() <= 0:
        raise QualityError(f"item {item}: probabilities sum to zero")
    normalised: npt.NDArray[np.float64] = row / row.sum()
    return normalised


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
        probs[row] = _probability_row(item, probabilities[item])
    result = get_label_quality_multiannotator(
        pd.DataFrame(matrix, columns=names), probs, calibrate_probs=True, verbose=False
    )["label_quality"]
    out = {}
    for row, item in enumerate(order):
        label = LABELS[int(result["consensus_label"].iloc[row])]
        agree = sum(v.label == label for v in items[item].values()) / len(items[item])
        quality = float(result["consensus_quality_score"].iloc[row])
        out[item] = Consensus(item, label, quality, agree, len(items[item]), CROWDLAB)
    return out


def _dawid_skene(
    items: Mapping[int, Mapping[str, Vote]], probabilities: Mapping[int, Sequence[float]]
) -> dict[int, Consensus]:
    """EM over every item at once: the annotators' confusion matrices from the posteriors,
    the posteriors from the confusion matrices and each item's prior (the model's row, or
    the classes' frequency), until they settle."""
    k = len(LABELS)
    order = list(items)
    names = sorted({a for answers in items.values() for a in answers})
    column = {name: j for j, name in enumerate(names)}
    rows, cols, given = (
        np.array(v, dtype=int)
        for v in zip(
            *(
                (r, column[name], LABELS.index(vote.label))
                for r, item in enumerate(order)
                for name, vote in items[item].items()
            ),
            strict=True,
        )
    )
    modelled = np.array([item in probabilities for item in order])
    log_prior = np.zeros((len(order), k))
    for r, item in enumerate(order):
        if modelled[r]:
            log_prior[r] = np.log(np.clip(_probability_row(item, probabilities[item]), 1e-6, 1))
    post = np.zeros((len(order), k))
    np.add.at(post, (rows, given), 1.0)  # start from the vote shares
    post /= post.sum(axis=1, keepdims=True)
    base = np.full((k, k), _PRIOR_WRONG) + np.eye(k) * (_PRIOR_RIGHT - _PRIOR_WRONG)
    for _ in range(_MAX_ROUNDS):
        confusion = np.repeat(base[None], len(names), axis=0)  # [annotator, true, given]
        for true in range(k):
            np.add.at(confusion[:, true, :], (cols, given), post[rows, true])
        confusion /= confusion.sum(axis=2, keepdims=True)
        frequency = (post.sum(axis=0) + 1.0) / (len(order) + k)
        log_post = np.where(modelled[:, None], log_prior, np.log(frequency)[None, :])
        np.add.at(log_post, rows, np.log(confusion[cols, :, given]))
        new = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        new /= new.sum(axis=1, keepdims=True)
        settled = float(np.abs(new - post).max()) < _TOLERANCE
        post = new
        if settled:
            break
    out = {}
    for r, item in enumerate(order):
        best = int(np.argmax(post[r]))
        label = LABELS[best]
        agree = sum(v.label == label for v in items[item].values()) / len(items[item])
        out[item] = Consensus(
            item, label, float(post[r, best]), agree, len(items[item]), DAWID_SKENE
        )
    return out
