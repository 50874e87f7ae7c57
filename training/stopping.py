"""When more labels stop helping: the stabilising-predictions criterion (Bloodgood and
Vijay-Shanker, 2009). Successive models label a fixed unlabelled stop set; once Cohen's
kappa between each pair of successive models stays at or above a threshold for a window
of versions, new labels no longer change what the model predicts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from training.errors import TrainingError

__all__ = ["cohen_kappa", "stabilised"]


def cohen_kappa(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Agreement of two label vectors beyond chance; 1.0 when both are one same constant."""
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape or x.ndim != 1:
        raise TrainingError(
            f"kappa needs two label vectors of one length, got {x.shape}, {y.shape}"
        )
    if x.size == 0:
        raise TrainingError("kappa of empty label vectors")
    observed = float(np.mean(x == y))
    labels = np.union1d(x, y)
    expected = float(sum(np.mean(x == v) * np.mean(y == v) for v in labels))
    if expected >= 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def stabilised(kappas: Sequence[float], threshold: float, window: int) -> bool:
    """True when the last ``window`` kappas (oldest first) all reach ``threshold``."""
    if window < 1:
        raise TrainingError(f"window must be at least 1, got {window}")
    recent = list(kappas)[-window:]
    return len(recent) == window and all(k >= threshold for k in recent)
