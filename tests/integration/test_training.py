"""Integration tests: fine-tune, checkpoint and score with the real MiniLM model and data.

Sized for a 2-core CPU (about a minute in all); the data is read from ../shared, never
copied into the repository.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub in tests

from tests.conftest import airline_sample
from training import (  # imported after the environment is set
    DEFAULT_BASE_MODEL,
    LABELS,
    CheckpointError,
    CheckpointInfo,
    Scorer,
    TrainConfig,
    clean_stale_tmp,
    evaluate,
    fine_tune,
    is_complete,
    predicted_labels,
    save_checkpoint,
    verify_checkpoint,
)

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> CheckpointInfo:
    """One quick fine-tune (60 rows, 1 epoch) saved as a checkpoint, shared by the tests."""
    texts, labels = airline_sample("pool", 60, seed=0)
    steps: list[tuple[int, int]] = []
    model, tokenizer = fine_tune(
        DEFAULT_BASE_MODEL,
        texts,
        labels,
        TrainConfig(epochs=1),
        device="cpu",
        progress=lambda step, total: steps.append((step, total)),
    )
    assert steps == [(i, 4) for i in range(1, 5)]  # ceil(60 / 16) steps
    root = tmp_path_factory.mktemp("models")
    return save_checkpoint(model, tokenizer, root, "round-1", {"round": 1, "n_train": 60})


def test_checkpoint_verifies_and_detects_tampering(checkpoint: CheckpointInfo) -> None:
    assert is_complete(checkpoint.path)
    assert verify_checkpoint(checkpoint.path, checkpoint.sha256) == checkpoint.sha256

    weights = checkpoint.path / "model.safetensors"
    original = weights.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    try:
        weights.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match=r"model\.safetensors"):
            verify_checkpoint(checkpoint.path)
    finally:
        weights.write_bytes(original)
    assert verify_checkpoint(checkpoint.path) == checkpoint.sha256


def test_stale_tmp_dir_is_incomplete_and_cleaned(checkpoint: CheckpointInfo) -> None:
    root = checkpoint.path.parent
    stale = root / ".tmp-round-2-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half-written")
    assert not is_complete(stale)
    with pytest.raises(CheckpointError, match="incomplete"):
        verify_checkpoint(stale)
    assert clean_stale_tmp(root) == [stale]
    assert not stale.exists()
    assert is_complete(checkpoint.path)


def test_scorer_probabilities_and_order_independence(checkpoint: CheckpointInfo) -> None:
    texts, _ = airline_sample("dev", 40, seed=1)
    texts.append("")  # an empty chat must not break batching
    scorer = Scorer(checkpoint.path, device="cpu", batch_size=8)
    calls: list[tuple[int, int]] = []
    probs = scorer.predict_proba(texts, progress=lambda done, total: calls.append((done, total)))
    assert probs.shape == (len(texts), len(LABELS))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert calls[-1] == (len(texts), len(texts))
    assert len(calls) == 6  # ceil(41 / 8)

    perm = np.random.default_rng(2).permutation(len(texts))
    permuted = scorer.predict_proba([texts[i] for i in perm])
    np.testing.assert_allclose(permuted, probs[perm], atol=1e-5)
    assert scorer.predict_proba([]).shape == (0, 3)


def test_training_learns_beyond_majority_baseline(tmp_path: Path) -> None:
    """3 epochs on 300 pool rows must beat the majority-class macro-F1 (about 0.26)."""
    train_texts, train_labels = airline_sample("pool", 300, seed=3)
    dev_texts, dev_labels = airline_sample("dev", 300, seed=4)
    started = time.monotonic()
    model, tokenizer = fine_tune(
        DEFAULT_BASE_MODEL, train_texts, train_labels, TrainConfig(epochs=3), device="cpu"
    )
    info = save_checkpoint(model, tokenizer, tmp_path, "learn", {})
    probs = Scorer(info.path, device="cpu").predict_proba(dev_texts)
    report = evaluate(dev_labels, predicted_labels(probs))
    majority = Counter(dev_labels).most_common(1)[0][0]
    baseline = evaluate(dev_labels, [majority] * len(dev_labels))
    elapsed = time.monotonic() - started
    logger.info(
        "dev macro-F1 %.3f (baseline %.3f) in %.1f s",
        report["macro_f1"],
        baseline["macro_f1"],
        elapsed,
    )
    assert float(baseline["macro_f1"]) < 0.3  # type: ignore[arg-type]
    assert float(report["macro_f1"]) > 0.40, (report, elapsed)  # type: ignore[arg-type]
