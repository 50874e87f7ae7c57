"""Batch inference with a trained checkpoint."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training._batching import autocast, chunks, encode, pad_batch
from training.errors import ModelLoadError, TrainingError
from training.labels import LABELS
from training.model import pick_device

__all__ = ["Scorer"]

logger = logging.getLogger(__name__)


class Scorer:
    """Class probabilities for texts from one checkpoint.

    The model is loaded on first use, not in ``__init__``: a Celery prefork parent can
    build a Scorer without touching torch/CUDA before it forks its children.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int = 64,
    ) -> None:
        if batch_size < 1:
            raise TrainingError(f"batch_size must be positive, got {batch_size}")
        self.model_dir = Path(model_dir)
        self.device_preference = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._device: torch.device | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.device]:
        """Load once (thread-safe) and check the head matches ``LABELS``."""
        with self._lock:
            if self._model is None or self._tokenizer is None or self._device is None:
                device = pick_device(self.device_preference)
                try:
                    tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
                    model = AutoModelForSequenceClassification.from_pretrained(str(self.model_dir))
                except (OSError, ValueError, KeyError) as exc:
                    raise ModelLoadError(str(self.model_dir), str(exc)) from exc
                names = tuple(
                    str(model.config.id2label[i]).lower()
                    for i in range(int(model.config.num_labels))
                )
                if names != LABELS:
                    raise ModelLoadError(
                        str(self.model_dir),
                        f"its classes are {names}, expected {LABELS}",
                    )
                model.to(device)
                model.eval()
                logger.info("loaded scorer model %s on %s", self.model_dir, device)
                self._model, self._tokenizer, self._device = model, tokenizer, device
            return self._model, self._tokenizer, self._device

    def predict_proba(
        self,
        texts: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Return an (n, 3) float32 matrix of class probabilities, rows in input order.

        Texts are sorted by token length so each batch pads little; ``progress(done,
        total)`` is called after every batch with the number of texts scored so far.
        """
        total = len(texts)
        out = np.zeros((total, len(LABELS)), dtype=np.float32)
        if total == 0:
            return out
        model, tokenizer, device = self._load()
        encoded = encode(tokenizer, texts, self.max_length)
        lengths = np.array([len(e["input_ids"]) for e in encoded])
        # Longest first: an out-of-memory error shows up on the first batch, not the last.
        order = np.argsort(-lengths, kind="stable").tolist()
        done = 0
        with torch.inference_mode():
            for idx in chunks(order, self.batch_size):
                batch = pad_batch(tokenizer, [encoded[i] for i in idx], device)
                with autocast(device, training=False):
                    logits = model(**batch).logits
                probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                out[idx] = probs
                done += len(idx)
                if progress is not None:
                    progress(done, total)
        return out
