"""Knowledge distillation: a student learns from human labels and from a teacher's soft labels
on unlabelled chats (issue #19). The same soft-target loss trains on human labels alone (a
one-hot row with weight 1 is plain class-weighted cross-entropy), so there is one training
loop for both.

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

__all__ = ["SOFT_WEIGHT", "TrainingSet", "distillation_set", "human_set", "soft_cross_entropy"]

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
    taken = {_key(t) for t in (*texts, *held_out)}
    keep = [i for i, t in enumerate(pool_texts) if _key(t) not in taken]
    soft = probs[keep]
    soft = soft / np.clip(soft.sum(axis=1, keepdims=True), 1e-12, None)
    return TrainingSet(
        human.texts + [pool_texts[i] for i in keep],
        np.concatenate([human.targets, soft]).astype(np.float32),
        np.concatenate([human.weights, np.full(len(keep), soft_weight, dtype=np.float32)]),
        len(human),
        tuple(keep),
    )


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
