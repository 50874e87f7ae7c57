"""Labels that are probably wrong, for a person to review.

cleanlab's confident learning compares each given label with a model's out-of-sample
probabilities for that chat (from a model that never trained on it): a chat labelled
``positive`` that the model, knowing the label noise of the whole set, confidently reads as
``negative`` is flagged. The worst come first, so a review queue of any size takes the top.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from domain import LABELS
from quality.errors import QualityError

__all__ = ["likely_errors"]


def likely_errors(
    labels: Sequence[str], probabilities: Sequence[Sequence[float]], limit: int | None = None
) -> list[int]:
    """Positions in ``labels`` of the likely errors, most likely first (at most ``limit``)."""
    if len(labels) != len(probabilities):
        raise QualityError(f"{len(labels)} labels but {len(probabilities)} probability rows")
    if not labels:
        return []
    unknown = sorted({lab for lab in labels if lab not in LABELS})
    if unknown:
        raise QualityError(f"unknown labels {unknown}; expected some of {LABELS}")
    from cleanlab.filter import find_label_issues

    given = np.array([LABELS.index(lab) for lab in labels])
    if len(set(given.tolist())) < 2:  # one class given: nothing to contrast a label with
        return []
    probs = np.asarray(probabilities, dtype=float)
    if probs.shape != (len(labels), len(LABELS)):
        raise QualityError(f"expected {len(labels)}x{len(LABELS)} probabilities, got {probs.shape}")
    probs = probs / probs.sum(axis=1, keepdims=True)
    # one process: a Celery worker's child is daemonic and may not start a pool of its own
    ranked = find_label_issues(given, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    found = [int(i) for i in ranked]
    return found if limit is None else found[:limit]
