"""Fine-tuning loop: a plain PyTorch loop, small enough to read and fully seeded."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training._batching import autocast, chunks, encode, pad_batch
from training.distill import TrainingSet, human_set, soft_cross_entropy
from training.errors import TrainingError
from training.labels import LABELS
from training.model import load_for_training, pick_device

__all__ = ["TrainConfig", "class_weights", "fine_tune", "fine_tune_on"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning run.

    The defaults are the measured working point: with lr 1e-4 a single epoch collapses
    to the majority class, three epochs with a class-weighted loss do not.
    """

    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 16
    max_length: int = 64
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 0
    class_weighted: bool = True
    #: Stop when macro-F1 on the evaluation texts has not improved for this many epochs and
    #: keep the best epoch's weights (0: no early stopping, train every epoch).
    early_stopping_patience: int = 0
    #: Train more epochs than ``epochs`` when needed to take at least this many optimiser
    #: steps: 100 labels at batch 16 are only 21 steps in 3 epochs, too few to learn the
    #: minority classes (0: exactly ``epochs``).
    min_steps: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 2 or self.min_steps < 0:
            raise TrainingError(
                "epochs and batch_size must be >= 1, max_length >= 2 and min_steps >= 0, got "
                f"{self.epochs}, {self.batch_size}, {self.max_length}, {self.min_steps}"
            )
        if not 0.0 <= self.warmup_ratio <= 1.0 or self.learning_rate <= 0:
            raise TrainingError(
                "warmup_ratio must be in [0, 1] and learning_rate positive, got "
                f"{self.warmup_ratio}, {self.learning_rate}"
            )

    def epochs_for(self, examples: int) -> int:
        """Epochs to train on ``examples`` texts: ``epochs``, or more to reach ``min_steps``."""
        steps_per_epoch = max(1, math.ceil(examples / self.batch_size))
        return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))

    def to_dict(self) -> dict[str, object]:
        """Plain dict for checkpoint metadata and run records."""
        return dict(asdict(self))


def class_weights(label_ids: Sequence[int]) -> torch.Tensor:
    """Inverse-frequency weights with mean 1 over the classes present; absent classes get 0.

    Counteracts the airline data's negative majority, which otherwise dominates the loss.
    """
    counts = Counter(label_ids)
    return _inverse_frequency([float(counts[c]) for c in range(len(LABELS))])


def _inverse_frequency(mass: Sequence[float]) -> torch.Tensor:
    """``class_weights`` on each class's total (weighted, possibly soft) share of the data."""
    present = [c for c, m in enumerate(mass) if m > 0]
    total = sum(mass)
    weights = torch.zeros(len(LABELS), dtype=torch.float32)
    for c in present:
        weights[c] = total / (len(present) * mass[c])
    return weights


def _label_ids(labels: Sequence[str]) -> list[int]:
    """Map label strings to class indices, naming any unknown ones."""
    index = {label: i for i, label in enumerate(LABELS)}
    unknown = sorted({str(lb) for lb in labels if lb not in index})
    if unknown:
        raise TrainingError(f"unknown label(s) {unknown}; expected one of {list(LABELS)}")
    return [index[lb] for lb in labels]


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights (the BERT recipe)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def _linear_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base learning rate, then linear decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _macro_f1(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: Sequence[dict[str, list[int]]],
    targets: Sequence[int],
    device: torch.device,
    batch_size: int,
) -> float:
    """Macro-F1 of the model in its current state (for early stopping)."""
    from sklearn.metrics import f1_score

    module: nn.Module = model
    module.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    predicted = [0] * len(encoded)
    with torch.inference_mode():
        for idx in chunks(order, batch_size):
            batch = pad_batch(tokenizer, [encoded[i] for i in idx], device)
            with autocast(device, training=False):
                logits = model(**batch).logits
            for i, p in zip(idx, logits.argmax(dim=-1).tolist(), strict=True):
                predicted[i] = int(p)
    return float(
        f1_score(
            list(targets),
            predicted,
            labels=list(range(len(LABELS))),
            average="macro",
            zero_division=0,
        )
    )


def fine_tune(
    base_model: str,
    texts: Sequence[str],
    labels: Sequence[str],
    config: TrainConfig,
    *,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    eval_texts: Sequence[str] = (),
    eval_labels: Sequence[str] = (),
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Fine-tune ``base_model`` on human-labelled texts (see :func:`fine_tune_on`)."""
    if len(texts) == 0:
        raise TrainingError("no training data: texts is empty")
    return fine_tune_on(
        base_model,
        human_set(texts, labels),
        config,
        device=device,
        progress=progress,
        eval_texts=eval_texts,
        eval_labels=eval_labels,
    )


def fine_tune_on(
    base_model: str,
    data: TrainingSet,
    config: TrainConfig,
    *,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    eval_texts: Sequence[str] = (),
    eval_labels: Sequence[str] = (),
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Fine-tune ``base_model`` on ``data`` (human labels, and a teacher's soft labels when
    distilling) and return the model and tokenizer.

    ``base_model`` may be one of our checkpoints (a warm start: its head is kept). With
    ``config.early_stopping_patience`` and evaluation texts, each epoch is scored on them
    and the best epoch's weights are returned.

    Seeding covers the new head's initialisation, dropout and the shuffling order, so
    the same inputs give the same model on the same hardware. ``progress(step,
    total_steps)`` is called after every optimisation step. The model is returned in
    eval mode, still on the training device.
    """
    if len(data) == 0:
        raise TrainingError("no training data: texts is empty")
    dev = pick_device(device)

    torch.manual_seed(config.seed)  # before loading: the new head is initialised randomly
    model, tokenizer = load_for_training(base_model)
    module: nn.Module = model  # typed view; transformers wraps .to()/.eval() untyped
    module.to(dev)
    encoded = encode(tokenizer, data.texts, config.max_length)
    targets = torch.from_numpy(data.targets)
    example_weights = torch.from_numpy(data.weights)

    mass = (example_weights[:, None] * targets).sum(dim=0).tolist()
    weight = _inverse_frequency(mass) if config.class_weighted else None
    class_weight = weight.to(dev) if weight is not None else None
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    epochs = config.epochs_for(len(encoded))
    total_steps = steps_per_epoch * epochs
    optimizer = _optimizer(model, config)
    scheduler = _linear_schedule(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    generator = torch.Generator().manual_seed(config.seed)
    logger.info(
        "fine-tuning %s on %d examples (%d human) for %d epoch(s), %d steps, device %s, weights %s",
        base_model,
        len(encoded),
        data.n_human,
        epochs,
        total_steps,
        dev,
        None if weight is None else [round(float(w), 3) for w in weight],
    )

    eval_encoded = encode(tokenizer, eval_texts, config.max_length) if eval_texts else []
    eval_targets = _label_ids(eval_labels) if eval_texts else []
    stopping = config.early_stopping_patience > 0 and bool(eval_encoded)
    best_f1, best_state, stale = -1.0, None, 0

    started = time.monotonic()
    step = 0
    module.train()
    for epoch in range(epochs):
        order = torch.randperm(len(encoded), generator=generator).tolist()
        epoch_loss = 0.0
        for idx in chunks(order, config.batch_size):
            batch = pad_batch(tokenizer, [encoded[i] for i in idx], dev)
            with autocast(dev, training=True):
                logits = model(**batch).logits
            loss = soft_cross_entropy(
                logits.float(),
                targets[idx].to(dev),
                example_weights[idx].to(dev),
                class_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            epoch_loss += float(loss.detach())
            if progress is not None:
                progress(step, total_steps)
        logger.info("epoch %d/%d: mean loss %.4f", epoch + 1, epochs, epoch_loss / steps_per_epoch)
        if stopping:
            f1 = _macro_f1(model, tokenizer, eval_encoded, eval_targets, dev, config.batch_size * 4)
            module.train()
            logger.info(
                "epoch %d: macro-F1 %.4f on %d evaluation texts", epoch + 1, f1, len(eval_targets)
            )
            if f1 > best_f1:
                best_f1, stale = f1, 0
                best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
            else:
                stale += 1
                if stale >= config.early_stopping_patience:
                    logger.info(
                        "early stop after epoch %d (best macro-F1 %.4f)", epoch + 1, best_f1
                    )
                    if progress is not None:
                        progress(total_steps, total_steps)
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    module.eval()
    logger.info("fine-tuning finished in %.1f s", time.monotonic() - started)
    return model, tokenizer
