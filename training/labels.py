"""Label order and the numbers derived from the model's class probabilities.

``LABELS`` fixes the class index order once, so that the model head, the evaluation
report and the database all agree on what column 0, 1 and 2 mean.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from domain import LABELS  # the model's output order (id2label/label2id on the config)
from training.errors import TrainingError

__all__ = ["LABELS", "predicted_labels", "sentiment_score", "uncertainty"]


def _as_probs(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Validate an (n, 3) probability matrix; a wrong shape would silently mislabel columns."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(LABELS):
        raise TrainingError(
            f"expected a probability matrix of shape (n, {len(LABELS)}), got {arr.shape}"
        )
    return arr


def sentiment_score(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Expected sentiment on a 0..1 scale: ``P(positive) + 0.5 * P(neutral)``.

    Mapping negative/neutral/positive to 0/0.5/1 and taking the expectation gives one
    number per chat that dashboards can average and sort: 0 means surely negative,
    0.5 neutral (or evenly torn between negative and positive), 1 surely positive.
    """
    arr = _as_probs(probs)
    return arr[:, 2] + 0.5 * arr[:, 1]


def uncertainty(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Normalised entropy in 0..1 (0 = one class certain, 1 = uniform over all classes).

    Dividing by ``log(3)`` makes the value independent of the number of classes, so a
    threshold like 0.8 keeps its meaning.
    """
    arr = _as_probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(arr > 0, arr * np.log(np.where(arr > 0, arr, 1.0)), 0.0)
    ent: npt.NDArray[np.float64] = np.clip(-terms.sum(axis=1) / math.log(len(LABELS)), 0.0, 1.0)
    return ent


def predicted_labels(probs: npt.ArrayLike) -> list[str]:
    """Most probable label per row (ties go to the lower index, as ``argmax`` does)."""
    arr = _as_probs(probs)
    return [LABELS[int(i)] for i in arr.argmax(axis=1)]
