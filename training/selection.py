"""Active-learning query strategies over a model's (n, 3) probability matrix."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from training.errors import TrainingError

__all__ = ["STRATEGIES", "cold_start", "select"]

STRATEGIES = ("random", "least_confidence", "margin", "entropy")


def _check_k(k: int) -> None:
    if k < 0:
        raise TrainingError(f"k must be non-negative, got {k}")


def select(strategy: str, probs: npt.ArrayLike, k: int, *, seed: int = 0) -> npt.NDArray[np.int64]:
    """Row indices of the ``k`` most informative rows, most informative first.

    Utilities come from modAL; ranking is done here because ``multi_argmax`` returns an
    unordered set. Ties are broken by lower row index so the result is reproducible.
    Returns ``min(k, n)`` distinct indices.
    """
    _check_k(k)
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise TrainingError(f"expected a 2-D probability matrix, got shape {arr.shape}")
    n = arr.shape[0]
    take = min(k, n)
    if strategy == "random":
        rng = np.random.default_rng(seed)
        return rng.permutation(n)[:take].astype(np.int64)
    if strategy == "least_confidence":
        key = -np.asarray(_proba_uncertainty(arr), dtype=np.float64)
    elif strategy == "margin":
        key = np.asarray(_proba_margin(arr), dtype=np.float64)  # small margin = unsure
    elif strategy == "entropy":
        key = -np.asarray(_proba_entropy(arr), dtype=np.float64)
    else:
        raise TrainingError(
            f"unknown query strategy {strategy!r}: the setting SENTILOOP_STRATEGY must be "
            f"one of {list(STRATEGIES)}"
        )
    order: npt.NDArray[np.int64] = np.lexsort((np.arange(n), key)).astype(np.int64)
    return order[:take]  # lexsort: last key primary (utility), ties by index


def cold_start(n: int, k: int, *, seed: int = 0) -> npt.NDArray[np.int64]:
    """First batch to label before any model exists: ``min(k, n)`` random distinct indices."""
    _check_k(k)
    if n < 0:
        raise TrainingError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    return rng.choice(n, size=min(k, n), replace=False).astype(np.int64)
