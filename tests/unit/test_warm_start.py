"""The warm-started round (issue #17): what an incremental retrain learns besides its new
labels (earlier labels replayed, stratified by class, as many as SENTILOOP_REPLAY_RATIO asks
and the old ones allow, the same for the same seed), and the benchmark's arms."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from benchmarks.active_learning_arms import split_arm
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
