"""Temperature scaling: one scalar per version makes the 0..1 score and the uncertainty used
for selection mean what they say (a fine-tuned BERT is over-confident)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar

from training.errors import TrainingError
from training.labels import LABELS

__all__ = ["apply_temperature", "expected_calibration_error", "fit_temperature"]

_EPS = 1e-12


def _targets(labels: Sequence[str]) -> npt.NDArray[np.int64]:
    index = {label: i for i, label in enumerate(LABELS)}
    try:
        return np.array([index[label] for label in labels], dtype=np.int64)
    except KeyError as exc:
        raise TrainingError(f"unknown label {exc.args[0]!r}; expected one of {LABELS}") from None


def apply_temperature(probs: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """softmax(log p / T): the log-probabilities are logits up to a per-row constant."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature <= 0:
        raise TrainingError(f"temperature must be positive, got {temperature}")
    if temperature == 1.0:
        return p
    z = np.log(np.clip(p, _EPS, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def fit_temperature(probs: npt.ArrayLike, labels: Sequence[str]) -> float:
    """The temperature minimising the negative log-likelihood of ``labels``."""
    p = np.asarray(probs, dtype=np.float64)
    y = _targets(labels)
    if len(y) == 0 or len(y) != len(p):
        raise TrainingError(
            f"need matching, non-empty probabilities and labels ({len(p)}, {len(y)})"
        )

    def nll(log_t: float) -> float:
        q = apply_temperature(p, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(q[np.arange(len(y)), y], _EPS, 1.0))))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def expected_calibration_error(
    probs: npt.ArrayLike, labels: Sequence[str], n_bins: int = 15
) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width bins."""
    p = np.asarray(probs, dtype=np.float64)
    y = _targets(labels)
    if len(y) == 0:
        return 0.0
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)
