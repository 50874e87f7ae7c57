"""Model training, scoring, evaluation, checkpoints and query strategies for sentiloop.

Independent of the rest of the project (no Label Studio, Celery or database imports), so
it can be tested and run on its own. Importing it loads torch and transformers but no model.
"""

from training.calibration import apply_temperature, expected_calibration_error, fit_temperature
from training.checkpoint import (
    CheckpointInfo,
    clean_stale_tmp,
    is_complete,
    save_checkpoint,
    verify_checkpoint,
)
from training.distill import (
    SOFT_WEIGHT,
    PseudoLabels,
    TrainingSet,
    distillation_set,
    human_set,
    self_training_set,
)
from training.errors import CheckpointError, ModelLoadError, TrainingError
from training.evaluate import evaluate
from training.labels import LABELS, predicted_labels, sentiment_score, uncertainty
from training.model import DEFAULT_BASE_MODEL, load_for_training, pick_device, resolve_model_path
from training.scoring import PRECISIONS, Scorer, resolve_precision
from training.selection import (
    NEEDS_EMBEDDINGS,
    STRATEGIES,
    cold_start,
    duplicate_key,
    select,
    top_k,
    utility,
)
from training.stopping import cohen_kappa, stabilised
from training.train import TrainConfig, fine_tune, fine_tune_on

__all__ = [
    "DEFAULT_BASE_MODEL",
    "LABELS",
    "NEEDS_EMBEDDINGS",
    "PRECISIONS",
    "SOFT_WEIGHT",
    "STRATEGIES",
    "CheckpointError",
    "CheckpointInfo",
    "ModelLoadError",
    "PseudoLabels",
    "Scorer",
    "TrainConfig",
    "TrainingError",
    "TrainingSet",
    "apply_temperature",
    "clean_stale_tmp",
    "cohen_kappa",
    "cold_start",
    "distillation_set",
    "duplicate_key",
    "evaluate",
    "expected_calibration_error",
    "fine_tune",
    "fine_tune_on",
    "fit_temperature",
    "human_set",
    "is_complete",
    "load_for_training",
    "pick_device",
    "predicted_labels",
    "resolve_model_path",
    "resolve_precision",
    "save_checkpoint",
    "select",
    "self_training_set",
    "sentiment_score",
    "stabilised",
    "top_k",
    "uncertainty",
    "utility",
    "verify_checkpoint",
]
