"""Integration tests: reduced-precision and chunked scoring with a fine-tuned MiniLM.

The quick fine-tune (``tuned_checkpoint`` in conftest) is shared by the session; the data
is read from ../shared, never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub in tests

from tests.conftest import airline_sample
from training import CheckpointInfo, Scorer, TrainingError  # after the environment is set

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def tuned(tuned_checkpoint: CheckpointInfo) -> Path:
    return tuned_checkpoint.path


@pytest.fixture(scope="session")
def dev_texts() -> list[str]:
    return airline_sample("dev", 200, seed=7)[0]


@pytest.fixture(scope="session")
def fp32_probs(tuned: Path, dev_texts: list[str]) -> np.ndarray:
    probs = Scorer(tuned, device="cpu").predict_proba(dev_texts)
    assert len(set(probs.argmax(axis=1).tolist())) >= 2, "the quick fine-tune collapsed"
    return probs


@pytest.mark.parametrize("precision", ["int8", "bf16", "auto"])
def test_reduced_precision_agrees_with_fp32(
    tuned: Path, dev_texts: list[str], fp32_probs: np.ndarray, precision: str
) -> None:
    scorer = Scorer(tuned, device="cpu", precision=precision)
    probs = scorer.predict_proba(dev_texts)
    assert scorer.effective_precision in {"int8", "bf16"}
    assert probs.shape == fp32_probs.shape
    assert probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    agreement = float((probs.argmax(axis=1) == fp32_probs.argmax(axis=1)).mean())
    assert agreement >= 0.97, f"{precision}: argmax agreement {agreement:.3f} with fp32"


def test_chunked_scoring_equals_unchunked(
    tuned: Path, dev_texts: list[str], fp32_probs: np.ndarray
) -> None:
    calls: list[tuple[int, int]] = []
    chunked = Scorer(tuned, device="cpu", batch_size=8, chunk_size=37).predict_proba(
        dev_texts, progress=lambda done, total: calls.append((done, total))
    )
    np.testing.assert_allclose(chunked, fp32_probs, atol=1e-5)
    assert calls[-1] == (len(dev_texts), len(dev_texts))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # Rows come back in input order: each text scored alone gives its own row.
    alone = Scorer(tuned, device="cpu").predict_proba([dev_texts[5]])
    np.testing.assert_allclose(alone[0], fp32_probs[5], atol=1e-5)


def test_non_string_rejected_before_any_work(tuned: Path) -> None:
    scorer = Scorer(tuned, device="cpu", chunk_size=2)
    with pytest.raises(TrainingError, match="must be strings"):
        scorer.predict_proba(["fine", "also fine", None])  # type: ignore[list-item]
    assert scorer.effective_precision is None  # failed before loading the model


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_gpu_raises(tuned: Path) -> None:
    with pytest.raises(TrainingError, match="SENTILOOP_DEVICE"):
        Scorer(tuned, device="cuda").predict_proba(["hello"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_on_cuda_names_the_setting(tuned: Path) -> None:
    with pytest.raises(TrainingError, match="SENTILOOP_SCORE_PRECISION"):
        Scorer(tuned, device="cuda", precision="int8").predict_proba(["hello"])
