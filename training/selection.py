"""Active-learning query strategies over a model's (n, 3) probability matrix."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from training.errors import TrainingError

__all__ = ["STRATEGIES", "cold_start", "select", "top_k"]

STRATEGIES = ("random", "least_confidence", "margin", "entropy")


def _check_k(k: int) -> None:
    if k < 0:
        raise TrainingError(f"k must be non-negative, got {k}")


def top_k(utility: npt.ArrayLike, k: int, *, largest: bool = True) -> npt.NDArray[np.int64]:
    """Indices of the ``k`` best entries of a 1-D ``utility``, best first.

    Best means largest (or smallest with ``largest=False``); ties go to the lower index,
    and NaN counts as the worst possible value. Returns ``min(k, n)`` distinct indices.
    O(n + k log k): ``argpartition`` finds the k-th best value, then only the entries at
    least that good are sorted (the top 1,000 of 1,000,000 take ~10 ms).
    """
    _check_k(k)
    arr = np.asarray(utility, dtype=np.float64)
    if arr.ndim != 1:
        raise TrainingError(f"expected a 1-D utility vector, got shape {arr.shape}")
    n = arr.shape[0]
    take = min(k, n)
    if take == 0:
        return np.zeros(0, dtype=np.int64)
    key = -arr if largest else arr.copy()  # ascending key: smaller is better
    key[np.isnan(key)] = np.inf
    if take < n:
        kth = key[np.argpartition(key, take - 1)[take - 1]]
        better = np.flatnonzero(key < kth)
        tied = np.flatnonzero(key == kth)[: take - better.size]  # lowest indices win ties
        candidates = np.concatenate((better, tied))
    else:
        candidates = np.arange(n)
    # lexsort: the last key is primary (utility), ties by index.
    order = np.lexsort((candidates, key[candidates]))
    result: npt.NDArray[np.int64] = candidates[order].astype(np.int64)
    return result


def select(strategy: str, probs: npt.ArrayLike, k: int, *, seed: int = 0) -> npt.NDArray[np.int64]:
    """Row indices of the ``k`` most informative rows, most informative first.

    Utilities come from modAL; ranking is done by :func:`top_k` because ``multi_argmax``
    returns an unordered set. Ties are broken by lower row index so the result is
    reproducible. Returns ``min(k, n)`` distinct indices.
    """
    _check_k(k)
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise TrainingError(f"expected a 2-D probability matrix, got shape {arr.shape}")
    n = arr.shape[0]
    if strategy == "random":
        rng = np.random.default_rng(seed)
        return rng.permutation(n)[: min(k, n)].astype(np.int64)
    if strategy == "least_confidence":
        return top_k(np.asarray(_proba_uncertainty(arr), dtype=np.float64), k)
    if strategy == "margin":  # small margin = unsure
        return top_k(np.asarray(_proba_margin(arr), dtype=np.float64), k, largest=False)
    if strategy == "entropy":
        return top_k(np.asarray(_proba_entropy(arr), dtype=np.float64), k)
    raise TrainingError(
        f"unknown query strategy {strategy!r}: the setting SENTILOOP_STRATEGY must be "
        f"one of {list(STRATEGIES)}"
    )


def cold_start(n: int, k: int, *, seed: int = 0) -> npt.NDArray[np.int64]:
    """First batch to label before any model exists: ``min(k, n)`` random distinct indices."""
    _check_k(k)
    if n < 0:
        raise TrainingError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    return rng.choice(n, size=min(k, n), replace=False).astype(np.int64)
