"""The warm-started round (issue #17): what an incremental retrain learns besides its new
labels (earlier labels replayed, stratified by class, as many as SENTILOOP_REPLAY_RATIO asks
and the old ones allow, the same for the same seed), and the benchmark's arms."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from benchmarks.active_learning_arms import first_labels, split_arm
from benchmarks.active_learning_report import Curves
from orchestrator.retrain import replay_sample
from store import TrainingExample

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _old(counts: dict[str, int]) -> list[TrainingExample]:
    out, n = [], 0
    for label, k in counts.items():
        for _ in range(k):
            n += 1
            out.append(TrainingExample(n, n, f"text {n}", label, NOW))
    return out


def test_replay_is_stratified_by_class_and_sized_by_the_ratio() -> None:
    old = _old({"negative": 60, "neutral": 30, "positive": 10})
    got = replay_sample(old, n_new=20, ratio=1.0, seed=0)
    # 20 of 100 old labels, in the old labels' proportions (12 / 6 / 2)
    assert Counter(e.label for e in got) == {"negative": 12, "neutral": 6, "positive": 2}
    assert len({e.chat_id for e in got}) == 20 and set(got) <= set(old)
    assert [e.chat_id for e in got] == sorted(e.chat_id for e in got)
    assert replay_sample(old, 20, 1.0, seed=0) == got  # the same seed, the same replay
    assert replay_sample(old, 20, 1.0, seed=1) != got
    # largest remainder: 7 of 60/30/10 is 4.2/2.1/0.7 -> 4/2/1
    assert Counter(e.label for e in replay_sample(old, 7, 1.0, 0)) == {
        "negative": 4, "neutral": 2, "positive": 1
    }  # fmt: skip


def test_replay_never_asks_more_than_there_is_and_zero_is_none() -> None:
    old = _old({"negative": 3, "positive": 2})
    assert len(replay_sample(old, n_new=50, ratio=2.0, seed=0)) == 5
    assert replay_sample(old, n_new=50, ratio=0.0, seed=0) == []
    assert replay_sample([], n_new=50, ratio=1.0, seed=0) == []


def test_benchmark_arms_are_named_after_a_plus() -> None:
    assert split_arm("diverse") == ("diverse", frozenset())
    assert split_arm("diverse:even+self") == ("diverse:even", frozenset({"self"}))
    assert split_arm("random+warm") == ("random", frozenset({"warm"}))
    with pytest.raises(ValueError, match="unknown arm"):
        split_arm("diverse+magic")
    with pytest.raises(ValueError, match="measured apart"):
        split_arm("diverse+self+warm")
    assert split_arm("diverse+warm+zero-shot") == ("diverse", frozenset({"warm", "zero-shot"}))
    with pytest.raises(ValueError, match="one cold start"):
        split_arm("diverse+coverage+zero-shot")


def test_benchmark_cold_starts_share_the_sample_and_random_is_the_old_draw() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(400, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.eye(3, 8, dtype=np.float32)
    random_first = first_labels(frozenset({"warm"}), 3, 30, emb, labels)
    assert random_first == [int(i) for i in np.random.default_rng([3, 7]).choice(400, 30, False)]
    for arm in ("coverage", "zero-shot"):
        picked = first_labels(frozenset({arm}), 3, 30, emb, labels)
        assert len(set(picked)) == 30 and all(0 <= i < 400 for i in picked)
        assert picked == first_labels(frozenset({arm, "warm"}), 3, 30, emb, labels)
    assert first_labels(frozenset({"zero-shot"}), 3, 30, emb, labels) != first_labels(
        frozenset({"coverage"}), 3, 30, emb, labels
    )


def test_benchmark_pairs_each_arm_with_random_seed_by_seed() -> None:
    rows = [
        {"strategy": s, "seed": seed, "labels": b, "macro_f1": f1, "dev_macro_f1": f1}
        for seed, base in ((0, 0.60), (1, 0.70))
        for b in (100, 200)
        for s, f1 in (("random", base), ("arm", base + (0.02 if seed == 0 else -0.01)))
    ]
    mean, std, better, n = Curves(rows).paired("arm", "macro_f1")
    assert (round(mean, 4), round(std, 4), better, n) == (0.005, 0.015, 1, 2)
    assert Curves(rows).paired("arm", "macro_f1", 200)[2:] == (1, 2)
