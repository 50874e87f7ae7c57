"""Reduced-precision inference on the CPU: dynamic int8 ``nn.Linear`` layers, CPU features.

Why not ``torch.ao.quantization.quantize_dynamic``: in torch 2.13 it is deprecated (it
warns, pointing at torchao, which is not a dependency here), and its dynamic ``Linear``
always quantises activations with ``reduce_range=True`` (7 bits). Measured on the
airline dev set with a fine-tuned MiniLM, that agreed with fp32 on 96 % of argmaxes;
per-channel weights with full-range activations agree on 98 % at the same speed. So the
few lines below call the same fbgemm/oneDNN kernels (``quantized::linear_dynamic``)
directly, choosing the activation range from the CPU's instruction set.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import nn

from training.errors import TrainingError

__all__ = ["DynamicInt8Linear", "cpu_capabilities", "cpu_has_fast_bf16", "quantize_int8"]


@functools.cache
def cpu_capabilities() -> dict[str, Any]:
    """The CPU's instruction-set features as torch reports them ({} where it cannot)."""
    try:
        return dict(torch.cpu.get_capabilities())
    except (AttributeError, RuntimeError):  # older torch, non-x86 builds
        return {}


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 tiles (Intel Sapphire Rapids and later).

    There oneDNN runs bf16 matrix products in hardware: MiniLM with bf16 weights measured
    2.6x its fp32 speed and 1.6x dynamic int8, with 99.9 % argmax agreement with fp32
    (docs/benchmarks/scoring.md). Without AMX, bf16 is emulated or half-width and int8
    is the better CPU choice.
    """
    return bool(cpu_capabilities().get("amx_bf16", False))


def _cpu_has_vnni() -> bool:
    caps = cpu_capabilities()
    return bool(caps.get("avx512_vnni") or caps.get("avx_vnni") or caps.get("amx_int8"))


class DynamicInt8Linear(nn.Module):
    """``nn.Linear`` with int8 per-output-channel weights and int8 dynamic activations.

    Activations are quantised per call from their observed range (hence "dynamic": no
    calibration data needed); the matrix product accumulates in int32 and the output is
    fp32. Inference only.
    """

    def __init__(self, linear: nn.Linear, *, reduce_range: bool) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.reduce_range = reduce_range
        weight = linear.weight.detach().float().cpu()
        scales = (weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        with warnings.catch_warnings():
            # torch 2.13 marks quantized *tensor* creation as deprecated (pytorch#184982) in
            # favour of torchao, which this project does not install. The packed-weight
            # kernel used below is not deprecated; only this one-off conversion warns. Scoped
            # to this message so any other warning still surfaces (and fails the tests).
            warnings.filterwarnings(
                "ignore",
                message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                category=UserWarning,
            )
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        self._packed: Any = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.quantized.linear_dynamic(
            x.float(), self._packed, self.reduce_range
        )
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"reduce_range={self.reduce_range}"
        )


def quantize_int8(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` of a CPU model in place; return how many were replaced.

    On CPUs without VNNI, 8-bit activations can saturate fbgemm's 16-bit intermediate
    sums, so activations use 7 bits there (``reduce_range``), as torch.ao does.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise TrainingError("int8 quantisation is for CPU models; move the model to the CPU first")
    reduce_range = not _cpu_has_vnni()
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    try:
        for parent, name, child in targets:
            setattr(parent, name, DynamicInt8Linear(child, reduce_range=reduce_range))
    except RuntimeError as exc:  # no quantized engine in this torch build
        raise TrainingError(
            f"int8 quantisation is not available here ({exc}); set SENTILOOP_SCORE_PRECISION "
            "to 'fp32' or 'auto'"
        ) from exc
    return len(targets)
