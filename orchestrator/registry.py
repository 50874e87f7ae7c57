"""The model registry's public surface: (re)training in full or incremental mode, evaluation
and calibration, the promotion gate, promotion and rollback with an audit trail, retention and
model cards. Each concern lives in its own module; this one gathers them."""

from __future__ import annotations

from orchestrator.cards import card_data, card_markdown, write_model_card
from orchestrator.evaluation import (
    EvalSet,
    eval_set,
    evaluate_checkpoint,
    evaluate_version,
    gate,
    predict,
)
from orchestrator.promotion import auto_promote, promote, rollback
from orchestrator.retrain import (
    apply_retention,
    choose_mode,
    replay_sample,
    retrain,
    train_configs,
)

__all__ = [
    "EvalSet",
    "apply_retention",
    "auto_promote",
    "card_data",
    "card_markdown",
    "choose_mode",
    "eval_set",
    "evaluate_checkpoint",
    "evaluate_version",
    "gate",
    "predict",
    "promote",
    "replay_sample",
    "retrain",
    "rollback",
    "train_configs",
    "write_model_card",
]
