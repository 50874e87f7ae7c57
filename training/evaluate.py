"""Classification metrics in a JSON-serialisable form, for run records and the UI."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from training.errors import TrainingError
from training.labels import LABELS

__all__ = ["evaluate"]


def evaluate(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, object]:
    """Accuracy, macro-F1, per-class scores and the confusion matrix in ``LABELS`` order.

    Every label is always reported (zero when absent), so reports of different rounds
    line up; the confusion matrix has true labels as rows and predictions as columns.
    """
    if len(y_true) != len(y_pred):
        raise TrainingError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise TrainingError("cannot evaluate on an empty set")
    unknown = sorted({str(v) for v in [*y_true, *y_pred] if v not in LABELS})
    if unknown:
        raise TrainingError(f"unknown label(s) {unknown}; expected one of {list(LABELS)}")
    labels = list(LABELS)
    precision, recall, f1, support = precision_recall_fscore_support(
        list(y_true), list(y_pred), labels=labels, zero_division=0
    )
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    matrix = confusion_matrix(list(y_true), list(y_pred), labels=labels)
    return {
        "accuracy": float(accuracy_score(list(y_true), list(y_pred))),
        "macro_f1": float(
            f1_score(list(y_true), list(y_pred), labels=labels, average="macro", zero_division=0)
        ),
        "per_class": per_class,
        "confusion_matrix": [[int(v) for v in row] for row in matrix],
        "labels": labels,
        "n": len(y_true),
    }
