"""Unit tests for fast scoring support: top-k selection, precision resolution, int8 layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training import PRECISIONS, Scorer, TrainingError, resolve_precision, select, top_k
from training import scoring as scoring_mod
from training.quantize import DynamicInt8Linear, quantize_int8

pytestmark = pytest.mark.unit


def _reference(utility: np.ndarray, k: int, largest: bool) -> list[int]:
    """Full stable sort: the obviously correct (O(n log n)) answer."""
    key = np.where(np.isnan(utility), np.inf, -utility if largest else utility)
    return np.lexsort((np.arange(len(utility)), key))[:k].tolist()


def test_top_k_orders_best_first() -> None:
    u = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    assert top_k(u, 3).tolist() == [1, 3, 2]
    assert top_k(u, 3, largest=False).tolist() == [0, 4, 2]
    assert top_k(u, 1).dtype == np.int64


def test_top_k_breaks_ties_by_lower_index() -> None:
    u = np.array([0.5, 0.9, 0.5, 0.9, 0.5, 0.1])
    assert top_k(u, 3).tolist() == [1, 3, 0]
    assert top_k(u, 2, largest=False).tolist() == [5, 0]
    # The tie straddles the cut: only the lowest indices of the tied value get in.
    assert top_k(np.zeros(10), 4).tolist() == [0, 1, 2, 3]


def test_top_k_k_beyond_n_zero_and_negative() -> None:
    u = np.array([3.0, 1.0, 2.0])
    assert top_k(u, 10).tolist() == [0, 2, 1]
    assert top_k(u, 10, largest=False).tolist() == [1, 2, 0]
    assert top_k(u, 0).tolist() == []
    assert top_k(np.array([]), 5).tolist() == []
    with pytest.raises(TrainingError, match="non-negative"):
        top_k(u, -1)
    with pytest.raises(TrainingError, match="1-D"):
        top_k(np.ones((2, 2)), 1)


def test_top_k_puts_nan_last() -> None:
    u = np.array([np.nan, 0.2, np.nan, 0.8])
    assert top_k(u, 4).tolist() == [3, 1, 0, 2]
    assert top_k(u, 4, largest=False).tolist() == [1, 3, 0, 2]


def test_top_k_matches_a_full_sort_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        u = rng.integers(0, 4, n).astype(np.float64)  # many ties
        k = int(rng.integers(0, n + 5))
        for largest in (True, False):
            assert top_k(u, k, largest=largest).tolist() == _reference(u, k, largest)


def test_top_k_on_a_million_rows() -> None:
    rng = np.random.default_rng(1)
    u = rng.random(1_000_000)
    picked = top_k(u, 1000)
    assert picked.shape == (1000,)
    assert len(set(picked.tolist())) == 1000
    assert np.all(np.diff(u[picked]) <= 0)
    assert u[picked[-1]] >= np.partition(u, -1000)[-1000]


@pytest.mark.parametrize("strategy", ["least_confidence", "margin", "entropy"])
def test_select_ranks_like_a_full_sort(strategy: str) -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), size=500)
    probs[10] = probs[20] = probs[30]  # ties
    full = select(strategy, probs, 500)
    assert sorted(full.tolist()) == list(range(500))
    assert select(strategy, probs, 25).tolist() == full[:25].tolist()


def test_resolve_precision_names_the_setting() -> None:
    assert set(PRECISIONS) == {"fp32", "bf16", "int8", "auto"}
    with pytest.raises(TrainingError, match="SENTILOOP_SCORE_PRECISION"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(TrainingError, match="SENTILOOP_SCORE_PRECISION"):
        resolve_precision("int8", torch.device("cuda"))  # decided without touching CUDA
    with pytest.raises(TrainingError, match="SENTILOOP_SCORE_PRECISION"):
        Scorer("/nonexistent", precision="half")
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert resolve_precision("int8", torch.device("cpu")) == "int8"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_auto_on_cpu_follows_hardware_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring_mod, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(scoring_mod, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == "int8"


def test_scorer_validates_arguments_without_loading() -> None:
    scorer = Scorer("/nonexistent", device="cpu")
    assert scorer.batch_size == scoring_mod.CPU_BATCH_SIZE
    assert scorer.effective_precision is None
    assert Scorer("/nonexistent", batch_size=8).batch_size == 8
    for kwargs in ({"batch_size": 0}, {"chunk_size": 0}, {"max_length": 1}):
        with pytest.raises(TrainingError):
            Scorer("/nonexistent", **kwargs)  # type: ignore[arg-type]


def test_int8_linear_is_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 3)).eval()
    x = torch.randn(4, 10, 64)
    with torch.inference_mode():
        expected = model(x)
    assert quantize_int8(model) == 2
    assert all(isinstance(m, DynamicInt8Linear) for m in (model[0], model[2]))
    with torch.inference_mode():
        got = model(x)
    assert got.shape == expected.shape
    assert got.dtype == torch.float32
    rel = (got - expected).norm() / expected.norm()
    assert float(rel) < 0.05
