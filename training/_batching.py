"""Tokenisation, dynamic padding and mixed precision shared by training and scoring."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from training.errors import TrainingError

Encoded = dict[str, list[int]]


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[Encoded]:
    """Tokenise every text once, truncated but unpadded, so batches pad only as needed."""
    if max_length < 2:
        raise TrainingError(f"max_length must be at least 2, got {max_length}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TrainingError(f"texts must be strings; item(s) {bad[:5]} are not")
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    columns = {k: enc[k] for k in keys}
    return [{k: list(columns[k][i]) for k in keys} for i in range(len(texts))]


def pad_batch(
    tokenizer: PreTrainedTokenizerBase, items: Sequence[Encoded], device: torch.device
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member (honouring the tokenizer's padding side)."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise TrainingError("the tokenizer has no pad token; cannot batch texts")
    width = max(len(item["input_ids"]) for item in items)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    fill = {"input_ids": int(pad_id), "attention_mask": 0, "token_type_ids": 0}
    out: dict[str, torch.Tensor] = {}
    for key in items[0]:
        rows = []
        for item in items:
            seq = item[key]
            pad = [fill[key]] * (width - len(seq))
            rows.append(pad + seq if left else seq + pad)
        out[key] = torch.tensor(rows, dtype=torch.long)
    return to_device(out, device)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a host batch to ``device``; on CUDA through pinned memory, without blocking.

    A copy from pinned (page-locked) memory with ``non_blocking=True`` is queued on the
    current stream and returns at once, so the host can prepare the next batch while the
    GPU copies and computes. PyTorch's pinned-memory allocator keeps the host buffer alive
    until the queued copy has finished, so dropping ``batch`` afterwards is safe.
    """
    if device.type != "cuda":
        return batch if device.type == "cpu" else {k: v.to(device) for k, v in batch.items()}
    return {
        k: (v if v.is_pinned() else v.pin_memory()).to(device, non_blocking=True)
        for k, v in batch.items()
    }


def autocast(device: torch.device, *, training: bool) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA (fp16 for inference on GPUs without bf16); nothing on CPU.

    Training only uses bf16, which needs no gradient scaler; older GPUs train in fp32.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    if torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if training:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.float16)


def chunks(order: Sequence[int], size: int) -> Iterator[list[int]]:
    """Consecutive index slices of at most ``size`` elements."""
    for start in range(0, len(order), size):
        yield list(order[start : start + size])
