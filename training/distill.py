"""Knowledge distillation: a student learns from human labels and from a teacher's soft labels
on unlabelled chats (issue #19). The same soft-target loss trains on human labels alone (a
one-hot row with weight 1 is plain class-weighted cross-entropy), so there is one training
loop for both.

Self-training (issue #17) is the same idea with the model's own confident opinions as the
teacher: ``self_training_set`` keeps, per class, only the pool chats the model is surest of,
above a confidence floor and never more of a class than a multiple of its human labels (so the
majority class cannot swamp the others), as hard labels that weigh like a teacher's.

What a teacher may label is decided here, once: never a chat a human labelled (the human label
wins), never a text of the evaluation set (the gate's figures would measure the teacher), and
its labels always weigh less than a person's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from training.errors import TrainingError
from training.labels import LABELS

__all__ = [
    "SOFT_WEIGHT",
    "PseudoLabels",
    "TrainingSet",
    "distillation_set",
    "human_set",
    "self_training_set",
    "soft_cross_entropy",
]

SOFT_WEIGHT = 0.5
"""A teacher's label counts this much of a human's (per example, before class weights)."""


@dataclass(frozen=True)
class TrainingSet:
    """Texts, a probability row per text (the target), and a weight per text."""

    texts: list[str]
    targets: npt.NDArray[np.float32]  # (n, len(LABELS)), rows sum to 1
    weights: npt.NDArray[np.float32]  # (n,)
    n_human: int  # the first n_human rows are human labels, the rest a teacher's
    #: for each teacher row, its index in the pool texts it came from (lineage)
    pool_rows: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.texts)


def _one_hot(labels: Sequence[str]) -> npt.NDArray[np.float32]:
    index = {name: i for i, name in enumerate(LABELS)}
    unknown = sorted({lab for lab in labels if lab not in index})
    if unknown:
        raise TrainingError(f"unknown labels {unknown}; expected one of {list(LABELS)}")
    rows = np.zeros((len(labels), len(LABELS)), dtype=np.float32)
    rows[np.arange(len(labels)), [index[lab] for lab in labels]] = 1.0
    return rows


def human_set(texts: Sequence[str], labels: Sequence[str]) -> TrainingSet:
    """Human labels only: one-hot rows of weight 1."""
    if len(texts) != len(labels):
        raise TrainingError(f"{len(texts)} texts but {len(labels)} labels")
    return TrainingSet(
        list(texts), _one_hot(labels), np.ones(len(texts), dtype=np.float32), len(texts)
    )


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _unlabelled(
    texts: Sequence[str], pool_texts: Sequence[str], held_out: Sequence[str]
) -> list[int]:
    """The pool rows a teacher may label: no text a human labelled or the evaluation set holds."""
    taken = {_key(t) for t in (*texts, *held_out)}
    return [i for i, t in enumerate(pool_texts) if _key(t) not in taken]


def distillation_set(
    texts: Sequence[str],
    labels: Sequence[str],
    pool_texts: Sequence[str],
    teacher_probs: npt.ArrayLike,
    *,
    held_out: Sequence[str] = (),
    soft_weight: float = SOFT_WEIGHT,
) -> TrainingSet:
    """Human labels first, then the teacher's probabilities on pool texts, minus any pool text
    a human labelled or the evaluation set holds (compared ignoring case and spacing)."""
    probs = np.asarray(teacher_probs, dtype=np.float32)
    if probs.shape != (len(pool_texts), len(LABELS)):
        raise TrainingError(
            f"teacher probabilities of shape {probs.shape} for {len(pool_texts)} pool texts"
        )
    if not 0 < soft_weight < 1:
        raise TrainingError(f"a teacher's weight must lie in (0, 1), not {soft_weight}")
    human = human_set(texts, labels)
    keep = _unlabelled(texts, pool_texts, held_out)
    soft = probs[keep]
    soft = soft / np.clip(soft.sum(axis=1, keepdims=True), 1e-12, None)
    return TrainingSet(
        human.texts + [pool_texts[i] for i in keep],
        np.concatenate([human.targets, soft]).astype(np.float32),
        np.concatenate([human.weights, np.full(len(keep), soft_weight, dtype=np.float32)]),
        len(human),
        tuple(keep),
    )


@dataclass(frozen=True)
class PseudoLabels:
    """What self-training took, to be recorded with the version: per class, how many pool
    chats and the confidence of the least sure one taken (its effective threshold; None where
    none was taken), under the floor and the cap it was given."""

    counts: dict[str, int]
    thresholds: dict[str, float | None]
    min_confidence: float
    per_human: float

    def record(self) -> dict[str, object]:
        return {
            "pseudo_labels": dict(self.counts),
            "pseudo_thresholds": {
                k: None if v is None else round(v, 4) for k, v in self.thresholds.items()
            },
            "pseudo_min_confidence": self.min_confidence,
            "pseudo_per_human": self.per_human,
        }


def self_training_set(
    texts: Sequence[str],
    labels: Sequence[str],
    pool_texts: Sequence[str],
    probs: npt.ArrayLike,
    *,
    min_confidence: float,
    per_human: float,
    held_out: Sequence[str] = (),
    weight: float = SOFT_WEIGHT,
) -> tuple[TrainingSet, PseudoLabels]:
    """Human labels first, then the pool chats a model (calibrated: ``probs``, a row per pool
    text) is surest of, as hard labels: per class, those it predicts with at least
    ``min_confidence``, most confident first, at most ``per_human`` times that class's human
    labels (none for a class no human gave). The usual exclusions apply (human-labelled and
    evaluation texts)."""
    rows = np.asarray(probs, dtype=np.float64)
    if rows.shape != (len(pool_texts), len(LABELS)):
        raise TrainingError(f"probabilities of shape {rows.shape} for {len(pool_texts)} texts")
    if not 0 < weight < 1:
        raise TrainingError(f"a pseudo-label's weight must lie in (0, 1), not {weight}")
    if not 0 < min_confidence <= 1 or per_human < 0:
        raise TrainingError("min_confidence must lie in (0, 1] and per_human be at least 0")
    human = human_set(texts, labels)
    free = np.asarray(_unlabelled(texts, pool_texts, held_out), dtype=int)
    rows = rows[free] / np.clip(rows[free].sum(axis=1, keepdims=True), 1e-12, None)
    predicted, confidence = rows.argmax(axis=1), rows.max(axis=1)
    taken: list[int] = []
    counts: dict[str, int] = {}
    thresholds: dict[str, float | None] = {}
    for k, name in enumerate(LABELS):
        cap = int(per_human * sum(lab == name for lab in labels))
        sure = np.flatnonzero((predicted == k) & (confidence >= min_confidence))
        sure = sure[np.argsort(-confidence[sure], kind="stable")][:cap]
        taken.extend(int(free[i]) for i in sure)
        counts[name] = len(sure)
        thresholds[name] = float(confidence[sure[-1]]) if len(sure) else None
    taken.sort()
    targets = _one_hot([LABELS[int(np.argmax(np.asarray(probs)[i]))] for i in taken])
    data = TrainingSet(
        human.texts + [pool_texts[i] for i in taken],
        np.concatenate([human.targets, targets.reshape(-1, len(LABELS))]).astype(np.float32),
        np.concatenate([human.weights, np.full(len(taken), weight, dtype=np.float32)]),
        len(human),
        tuple(taken),
    )
    return data, PseudoLabels(counts, thresholds, min_confidence, per_human)


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy against probability rows, each row weighted by its example weight and
    by its classes' weights; the weighted mean, so that with one-hot rows and unit weights it
    is exactly torch's class-weighted ``CrossEntropyLoss``."""
    per_row = -(targets * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
    row_weight = weights if class_weight is None else weights * (targets @ class_weight)
    return (row_weight * per_row).sum() / row_weight.sum().clamp_min(1e-12)
