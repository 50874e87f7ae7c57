"""Batch inference with a trained checkpoint."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training._batching import encode, pad_batch, to_device
from training.errors import ModelLoadError, TrainingError
from training.labels import LABELS
from training.model import load_for_training, pick_device
from training.quantize import cpu_has_fast_bf16, quantize_int8

__all__ = [
    "CPU_BATCH_SIZE",
    "CUDA_BATCH_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "PRECISIONS",
    "Scorer",
    "resolve_precision",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8", "auto")
"""Accepted values of ``Scorer(precision=...)`` (the setting SENTILOOP_SCORE_PRECISION)."""

CPU_BATCH_SIZE = 64
"""Default CPU batch: measured fastest for MiniLM at max_length 64 (16 and 256 are slower)."""

CUDA_BATCH_SIZE = 256
"""Default GPU batch: large enough to keep a GPU busy with a 6-layer model."""

DEFAULT_CHUNK_SIZE = 8192
"""Texts tokenised (and length-sorted) at a time, bounding memory for very long inputs."""

_SETTING = "SENTILOOP_SCORE_PRECISION"


def resolve_precision(precision: str, device: torch.device) -> str:
    """What a requested precision means on ``device``: "fp32", "bf16", "fp16" or "int8".

    ``auto`` is bf16 autocast on CUDA (fp16 on GPUs without bf16); on the CPU it is bf16
    where the CPU computes bf16 in hardware (AMX) and dynamic int8 elsewhere.
    """
    if precision not in PRECISIONS:
        raise TrainingError(
            f"invalid precision {precision!r}: the setting {_SETTING} must be one of "
            f"{list(PRECISIONS)}"
        )
    if device.type == "cuda":
        if precision == "int8":
            raise TrainingError(
                f"precision 'int8' is CPU-only (dynamic quantisation) but the device is "
                f"{device}; set {_SETTING} to 'auto', 'bf16' or 'fp32' for GPU scoring"
            )
        if precision == "fp32":
            return "fp32"
        if torch.cuda.is_bf16_supported():
            return "bf16"
        if precision == "bf16":
            raise TrainingError(
                f"precision 'bf16' requested but {device} does not support bf16; set "
                f"{_SETTING} to 'auto' (fp16 there) or 'fp32'"
            )
        return "fp16"
    if precision == "auto":
        return "bf16" if cpu_has_fast_bf16() else "int8"
    return precision


@dataclass
class _Chunk:
    """One tokenised chunk: global row indices and host tensors, batch by batch."""

    rows: list[npt.NDArray[np.int64]]
    batches: list[dict[str, torch.Tensor]]


class Scorer:
    """Class probabilities for texts from one checkpoint.

    The model is loaded on first use, not in ``__init__``: a Celery prefork parent can
    build a Scorer without touching torch/CUDA before it forks its children.

    ``precision`` trades a little agreement with fp32 for speed: ``fp32`` (exact),
    ``bf16`` (autocast on CUDA, bf16 weights on the CPU), ``int8`` (CPU only: dynamic
    int8 linear layers) or ``auto``
    (see :func:`resolve_precision`). ``batch_size`` defaults to :data:`CPU_BATCH_SIZE`
    or :data:`CUDA_BATCH_SIZE` by device. Thread counts are left to the process
    (``torch.set_num_threads`` is global): by default torch uses one thread per core.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        max_length: int = 64,
        precision: str = "fp32",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        encoder_only: bool = False,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise TrainingError(f"batch_size must be positive, got {batch_size}")
        if chunk_size < 1:
            raise TrainingError(f"chunk_size must be positive, got {chunk_size}")
        if max_length < 2:
            raise TrainingError(f"max_length must be at least 2, got {max_length}")
        if precision not in PRECISIONS:
            raise TrainingError(
                f"invalid precision {precision!r}: the setting {_SETTING} must be one of "
                f"{list(PRECISIONS)}"
            )
        self.model_dir = Path(model_dir)
        self.device_preference = device
        self.requested_batch_size = batch_size
        self.max_length = max_length
        self.precision = precision
        self.chunk_size = chunk_size
        self.encoder_only = encoder_only
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._device: torch.device | None = None
        self._effective_precision: str | None = None
        self._lock = threading.Lock()

    @property
    def batch_size(self) -> int:
        """The batch size in use (the device default until the model is loaded on CUDA)."""
        if self.requested_batch_size is not None:
            return self.requested_batch_size
        if self._device is not None and self._device.type == "cuda":
            return CUDA_BATCH_SIZE
        return CPU_BATCH_SIZE

    @property
    def effective_precision(self) -> str | None:
        """ "fp32", "bf16", "fp16" or "int8" once loaded; None before the first use."""
        return self._effective_precision

    def _load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.device]:
        """Load once (thread-safe), check the head matches ``LABELS``, apply the precision."""
        with self._lock:
            if self._model is None or self._tokenizer is None or self._device is None:
                device = pick_device(self.device_preference)
                effective = resolve_precision(self.precision, device)
                model: Any
                try:
                    if self.encoder_only:  # any encoder: a fresh head, used for embeddings
                        model, tokenizer = load_for_training(str(self.model_dir))
                    else:
                        tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
                        model = AutoModelForSequenceClassification.from_pretrained(
                            str(self.model_dir)
                        )
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
                model.eval()
                if effective == "int8":
                    quantize_int8(model)
                elif effective == "bf16" and device.type == "cpu":
                    # bf16 weights, not autocast: autocast re-casts every weight on every
                    # forward, measured ~25 % slower on CPU (AMX) at the same agreement.
                    model.to(dtype=torch.bfloat16)
                model.to(device)
                logger.info("loaded scorer model %s on %s (%s)", self.model_dir, device, effective)
                self._effective_precision = effective
                self._model, self._tokenizer, self._device = model, tokenizer, device
            return self._model, self._tokenizer, self._device

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        """Mixed precision on CUDA; on the CPU bf16 weights need no autocast."""
        if device.type != "cuda":
            return contextlib.nullcontext()
        if self._effective_precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if self._effective_precision == "fp16":
            return torch.autocast(device_type=device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def _prepare(
        self, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], start: int, pin: bool
    ) -> _Chunk:
        """Tokenise ``texts[start:start+chunk_size]``, sort longest first, pad per batch."""
        part = texts[start : start + self.chunk_size]
        encoded = encode(tokenizer, part, self.max_length)
        lengths = np.fromiter((len(e["input_ids"]) for e in encoded), np.int64, len(encoded))
        # Longest first: an out-of-memory error shows up on the first batch, not the last.
        order = np.argsort(-lengths, kind="stable")
        cpu = torch.device("cpu")
        chunk = _Chunk(rows=[], batches=[])
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            batch = pad_batch(tokenizer, [encoded[i] for i in idx], cpu)
            if pin:
                batch = {k: v.pin_memory() for k, v in batch.items()}
            chunk.rows.append(idx + start)
            chunk.batches.append(batch)
        return chunk

    def _chunks(
        self, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], device: torch.device
    ) -> Iterator[_Chunk]:
        """Prepared chunks in order; on CUDA the next one is tokenised while the GPU works."""
        starts = range(0, len(texts), self.chunk_size)
        if device.type != "cuda":
            for start in starts:
                yield self._prepare(tokenizer, texts, start, pin=False)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentiloop-tokenise") as pool:
            pending: Future[_Chunk] | None = None
            for i, start in enumerate(starts):
                current = (
                    pending.result()
                    if pending is not None
                    else self._prepare(tokenizer, texts, start, pin=True)
                )
                following = start + self.chunk_size
                pending = (
                    pool.submit(self._prepare, tokenizer, texts, following, True)
                    if i + 1 < len(starts)
                    else None
                )
                yield current

    def predict_proba(
        self,
        texts: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Return an (n, 3) float32 matrix of class probabilities, rows in input order.

        The input is processed ``chunk_size`` texts at a time (so a million texts never
        hold a million encodings at once); within a chunk, texts are sorted by token
        length so each batch pads little. ``progress(done, total)`` is called after every
        batch with the number of texts scored so far (on CUDA: handed to the GPU).
        """
        return self._run(texts, progress, embed=False)[0]

    def predict_with_embeddings(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Probabilities and unit-length sentence embeddings (the mean of the last hidden
        layer over real tokens) from one forward pass: what diversity-aware selection and
        near-duplicate checks compare chats by."""
        probs, emb = self._run(texts, None, embed=True)
        assert emb is not None
        return probs, emb

    def _run(
        self, texts: Sequence[str], progress: Callable[[int, int], None] | None, *, embed: bool
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        total = len(texts)
        out = np.zeros((total, len(LABELS)), dtype=np.float32)
        if total == 0:
            return out, np.zeros((0, 0), dtype=np.float32) if embed else None
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:  # checked up front: failing half-way through a million texts wastes the work
            raise TrainingError(f"texts must be strings; item(s) {bad[:5]} are not")
        model, tokenizer, device = self._load()
        emb_out: npt.NDArray[np.float32] | None = None
        done = 0
        with torch.inference_mode():
            for chunk in self._chunks(tokenizer, texts, device):
                results: list[torch.Tensor] = []
                pooled: list[torch.Tensor] = []
                for batch in chunk.batches:
                    inputs = to_device(batch, device)
                    with self._autocast(device):
                        output = model(**inputs, output_hidden_states=embed)
                    # Stays on the device: no per-batch sync, the GPU can run ahead.
                    results.append(torch.softmax(output.logits.float(), dim=-1))
                    if embed:
                        mask = inputs["attention_mask"].unsqueeze(-1).float()
                        hidden = output.hidden_states[-1].float()
                        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                        pooled.append(torch.nn.functional.normalize(mean, dim=-1))
                    done += len(batch["input_ids"])
                    if progress is not None:
                        progress(done, total)
                rows = np.concatenate(chunk.rows)
                out[rows] = torch.cat(results).cpu().numpy()
                if embed:
                    vectors = torch.cat(pooled).cpu().numpy()
                    if emb_out is None:
                        emb_out = np.zeros((total, vectors.shape[1]), dtype=np.float32)
                    emb_out[rows] = vectors
        return out, emb_out
