"""Diversity, near-duplicates, class balance and cold start of the query strategies, on
hand-made probability matrices and embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import STRATEGIES, TrainingError, cold_start, duplicate_key, select

pytestmark = pytest.mark.unit


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, per: int, centers: int, dim: int = 16) -> np.ndarray:
    """``centers`` well separated directions, ``per`` chats close to each (in that order)."""
    base = np.eye(centers, dim)
    return _unit(np.repeat(base, per, axis=0) + rng.normal(0, 0.05, (per * centers, dim)))


def test_diverse_takes_one_chat_per_group_where_uncertainty_alone_takes_one_group() -> None:
    rng = np.random.default_rng(0)
    emb = _clustered(rng, per=10, centers=3)
    probs = np.tile([0.8, 0.1, 0.1], (30, 1))
    probs[:10] = [0.34, 0.33, 0.33]  # the whole first group is the most uncertain
    probs[10:20] = [0.5, 0.3, 0.2]
    probs[20:] = [0.6, 0.3, 0.1]
    assert {int(i) // 10 for i in select("margin", probs, 3)} == {0}
    picked = select("diverse", probs, 3, embeddings=emb, prefilter=10)
    assert sorted(int(i) // 10 for i in picked) == [0, 1, 2]
    assert picked[0] < 10  # ranked by uncertainty: the most unsure group's chat first


def test_near_duplicates_are_never_picked_together() -> None:
    rng = np.random.default_rng(1)
    emb = _unit(rng.normal(size=(6, 16)))
    emb[1] = _unit(emb[0] + rng.normal(0, 0.01, 16))  # chat 1 nearly repeats chat 0
    probs = np.array(
        [[0.34, 0.33, 0.33], [0.35, 0.33, 0.32], [0.5, 0.3, 0.2]] + [[0.9, 0.05, 0.05]] * 3
    )
    for strategy in ("least_confidence", "margin", "entropy", "diverse", "badge"):
        picked = select(
            strategy, probs, 3, embeddings=emb, duplicate_embeddings=emb, prefilter=2
        ).tolist()
        assert len(picked) == 3 and not {0, 1} <= set(picked), strategy
    keys = [
        duplicate_key(t)
        for t in ["@united WORST flight ever!!", "@delta worst flight ever", "ok", "a", "b", "c"]
    ]
    assert keys[0] == keys[1]
    picked = select("entropy", probs, 3, duplicate_keys=keys).tolist()
    assert picked[:1] == [0] and 1 not in picked and len(picked) == 3


def test_a_fine_tuned_models_collapsed_embeddings_do_not_count_as_duplicates() -> None:
    # a classifier maps most chats of a class to nearly one point: diversity may use
    # that space, but treating it as duplication would thin out the majority class
    rng = np.random.default_rng(2)
    collapsed = _unit(rng.normal(size=16) + rng.normal(0, 0.02, size=(40, 16)))
    assert (collapsed @ collapsed.T).min() > 0.99
    probs = rng.dirichlet([5, 1, 1], size=40)
    for strategy in ("random", "entropy", "diverse", "badge"):
        picked = select(strategy, probs, 10, embeddings=collapsed, prefilter=4).tolist()
        assert len(set(picked)) == 10, strategy
    assert len(select("random", probs, 10, duplicate_embeddings=collapsed)) == 1


def test_duplicate_key_ignores_case_mentions_links_digits_and_punctuation() -> None:
    assert duplicate_key("@united Flight 123 delayed!! http://t.co/x") == duplicate_key(
        "@AmericanAir flight 9 DELAYED"
    )
    assert duplicate_key("flight delayed") != duplicate_key("flight cancelled")


def test_class_balance_keeps_a_rarely_predicted_class_in_the_batch() -> None:
    probs = np.tile([0.45, 0.45, 0.10], (100, 1))  # unsure between negative and neutral
    probs[90:] = [0.1, 0.1, 0.8]  # positive: predicted rarely, and confidently
    plain = select("entropy", probs, 12)
    assert not any(i >= 90 for i in plain.tolist())
    balanced = select("entropy", probs, 12, class_balance=True).tolist()
    assert len(balanced) == 12 == len(set(balanced))
    assert sum(i >= 90 for i in balanced) >= 2  # ceil(12 / (2 * 3))
    emb = _unit(np.random.default_rng(3).normal(size=(100, 16)))
    diverse = select("diverse", probs, 12, embeddings=emb, class_balance=True).tolist()
    assert sum(i >= 90 for i in diverse) >= 2


def test_class_balance_by_labels_so_far_favours_the_classes_short_of_labels() -> None:
    probs = np.array(
        [[0.4, 0.35, 0.25]] * 200  # predicted negative, and the least sure
        + [[0.2, 0.6, 0.2]] * 100  # predicted neutral
        + [[0.2, 0.2, 0.6]] * 100  # predicted positive
    )

    def per_class(picked: np.ndarray) -> list[int]:
        return np.bincount(probs[picked].argmax(axis=1), minlength=3).tolist()

    assert per_class(select("margin", probs, 40)) == [40, 0, 0]
    assert per_class(select("margin", probs, 40, class_balance=True)) == [26, 7, 7]
    # 90 negative labels, 10 neutral, no positive: the 20 reserved places go by shortfall
    # from an even share ((100 + 40) / 3 each): 0, 36.7, 46.7 -> 0, 9, 11
    short = select("margin", probs, 40, class_balance=True, labelled_counts=[90, 10, 0])
    assert per_class(short) == [20, 9, 11]
    level = select("margin", probs, 40, class_balance=True, labelled_counts=[900, 900, 900])
    assert per_class(level) == [27, 7, 6]
    with pytest.raises(TrainingError, match="2 labelled counts for 3 classes"):
        select("margin", probs, 4, class_balance=True, labelled_counts=[1, 2])


def test_badge_is_unsure_first_and_spread_over_groups() -> None:
    rng = np.random.default_rng(6)
    emb = _clustered(rng, per=20, centers=3)
    probs = np.tile([0.98, 0.01, 0.01], (60, 1))
    probs[:20] = [0.4, 0.35, 0.25]  # group 0: unsure
    probs[20:40] = [0.55, 0.3, 0.15]  # group 1: fairly unsure
    probs[5] = [0.34, 0.33, 0.33]  # the least sure chat of all
    assert {int(i) // 20 for i in select("margin", probs, 3)} == {0}
    for seed in range(10):
        picked = select("badge", probs, 3, embeddings=emb, seed=seed).tolist()
        assert picked[0] == 5  # the longest gradient comes first
        assert len({i // 20 for i in picked}) >= 2, seed  # not three of one group
    assert select("badge", probs, 3, embeddings=emb, seed=1).tolist() == (
        select("badge", probs, 3, embeddings=emb, seed=1).tolist()
    )


def test_cold_start_covers_every_group_with_zero_labels() -> None:
    rng = np.random.default_rng(2)
    emb = _clustered(rng, per=30, centers=4)
    emb = emb[np.r_[0:30, 30:60, 60:64, 90:120]]  # one small group of 4 among groups of 30
    picked = cold_start(len(emb), 4, embeddings=emb, seed=5)
    groups = {0: range(0, 30), 1: range(30, 60), 2: range(60, 64), 3: range(64, 94)}
    hit = {g for i in picked.tolist() for g, r in groups.items() if i in r}
    assert hit == {0, 1, 2, 3} and len(set(picked.tolist())) == 4
    assert cold_start(len(emb), 4, embeddings=emb, seed=5).tolist() == picked.tolist()


def test_diverse_needs_embeddings_and_shapes_must_match() -> None:
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(TrainingError, match="embeddings"):
        select("diverse", probs, 2)
    with pytest.raises(TrainingError, match="3 embeddings for 4"):
        select("margin", probs, 2, embeddings=np.zeros((3, 8)))
    assert "diverse" in STRATEGIES


def test_the_strategy_setting_accepts_exactly_the_strategies_there_are() -> None:
    from orchestrator.settings import STRATEGIES as SETTING_STRATEGIES

    assert SETTING_STRATEGIES == STRATEGIES  # settings does not import torch to validate


def test_kappa_and_the_stabilising_predictions_rule() -> None:
    from training import cohen_kappa, stabilised

    assert cohen_kappa([0, 1, 2, 0], [0, 1, 2, 0]) == 1.0
    assert cohen_kappa([0, 0, 0], [0, 0, 0]) == 1.0
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert cohen_kappa([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    with pytest.raises(TrainingError):
        cohen_kappa([0, 1], [0])
    assert stabilised([0.5, 0.99, 0.995, 0.991], 0.99, 3)
    assert not stabilised([0.99, 0.98, 0.995, 0.991], 0.99, 3)
    assert not stabilised([0.995, 0.999], 0.99, 3)  # too few versions yet


def test_shortlist_keeps_the_least_sure_and_each_predicted_class() -> None:
    from orchestrator.selection import _shortlist

    rng = np.random.default_rng(4)
    probs = rng.dirichlet([8, 1, 1], size=2000)  # nearly all predicted negative
    probs[1990:] = [0.05, 0.05, 0.9]  # ten confident positives
    short = _shortlist(probs, "diverse", 10, prefilter=5, class_balance=False, seed=0)
    assert len(short) == len(set(short.tolist())) == 104  # max(5 x 10, 4 x 10 + 64)
    assert not any(i >= 1990 for i in short.tolist())
    balanced = _shortlist(probs, "diverse", 10, prefilter=5, class_balance=True, seed=0)
    assert set(range(1990, 2000)) <= set(balanced.tolist())
    assert balanced[: len(short)].tolist() == short.tolist()  # the uncertain ones lead
    assert len(_shortlist(probs, "random", 10, prefilter=5, class_balance=False, seed=0)) == 104
    # badge shortlists by gradient length, which for unit embeddings is |p - onehot|^2
    badge = _shortlist(probs, "badge", 10, prefilter=5, class_balance=False, seed=0)
    residual = probs.copy()
    residual[np.arange(len(probs)), probs.argmax(axis=1)] -= 1
    longest = np.argsort(-(residual**2).sum(axis=1), kind="stable")[:104]
    assert sorted(badge.tolist()) == sorted(longest.tolist())


def test_class_balance_setting_takes_a_mode_or_a_boolean(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from orchestrator.settings import ConfigError, load_settings

    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    for given, mode in [("even", "even"), ("true", "labels"), ("false", "off"), ("OFF", "off")]:
        monkeypatch.setenv("SENTILOOP_CLASS_BALANCE", given)
        assert load_settings().class_balance == mode
    monkeypatch.delenv("SENTILOOP_CLASS_BALANCE")
    assert load_settings().class_balance == "labels"
    monkeypatch.setenv("SENTILOOP_CLASS_BALANCE", "sometimes")
    with pytest.raises(ConfigError, match="SENTILOOP_CLASS_BALANCE"):
        load_settings()
