"""Label quality (issue #16): consensus by Dawid-Skene, CROWDLAB and majority, agreement
figures checked against hand-computed values, and planted label errors found."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from domain import LABELS
from quality import (
    CROWDLAB,
    DAWID_SKENE,
    MAJORITY,
    Consensus,
    QualityError,
    Vote,
    cohen_kappa,
    consensus,
    krippendorff_alpha,
    likely_errors,
    summarise,
)

pytestmark = pytest.mark.unit

NEG, NEU, POS = LABELS


def simulate(n: int, accuracies: list[float], seed: int = 0) -> tuple[list[Vote], list[str]]:
    """Annotators who err towards the confusable neighbour (neutral, or from neutral to
    either side), each answering every item in turn."""
    rng = np.random.default_rng(seed)
    truth = [LABELS[int(k)] for k in rng.integers(0, 3, n)]
    votes, order = [], 0
    for item, gold in enumerate(truth):
        for j, accuracy in enumerate(accuracies):
            label = gold
            if rng.random() > accuracy:
                label = NEU if gold != NEU else (NEG if rng.random() < 0.5 else POS)
            votes.append(Vote(item, f"a{j}", label, order))
            order += 1
    return votes, truth


def model_probabilities(truth: list[str], accuracy: float, seed: int = 1) -> dict[int, list[float]]:
    rng = np.random.default_rng(seed)
    out = {}
    for item, gold in enumerate(truth):
        guess = gold if rng.random() < accuracy else LABELS[int(rng.integers(0, 3))]
        row = np.full(3, 0.15)
        row[LABELS.index(guess)] = 0.7
        out[item] = list(row)
    return out


def test_majority_wins_and_its_share_is_the_quality() -> None:
    votes = [Vote(1, "a", NEG, 0), Vote(1, "b", NEG, 1), Vote(1, "c", POS, 2)]
    got = consensus(votes, method=MAJORITY)[1]
    assert (got.label, got.method, got.votes) == (NEG, MAJORITY, 3)
    assert got.quality == pytest.approx(2 / 3) == got.agreement


def test_a_tie_goes_to_the_newest_answer_with_half_quality() -> None:
    got = consensus([Vote(7, "a", POS, 5), Vote(7, "b", NEU, 2)], method=MAJORITY)[7]
    assert (got.label, got.quality) == (POS, 0.5)


def test_an_annotator_who_changed_their_answer_counts_once() -> None:
    votes = [Vote(1, "a", POS, 0), Vote(1, "b", NEG, 1), Vote(1, "a", NEG, 2)]
    for method in (MAJORITY, DAWID_SKENE):
        got = consensus(votes, method=method)[1]
        assert (got.label, got.votes, got.agreement) == (NEG, 2, 1.0)
    assert consensus(votes, method=MAJORITY)[1].quality == 1.0


def test_unknown_label_or_method_is_refused() -> None:
    with pytest.raises(QualityError, match="unknown label 'angry'"):
        consensus([Vote(1, "a", "angry")])
    with pytest.raises(QualityError, match="unknown consensus method 'vote'"):
        consensus([Vote(1, "a", POS)], method="vote")


def accuracy(got: dict[int, Consensus], truth: list[str]) -> float:
    return float(np.mean([got[i].label == truth[i] for i in range(len(truth))]))


def test_dawid_skene_beats_majority_and_its_quality_is_the_chance_of_being_right() -> None:
    votes, truth = simulate(600, [0.9, 0.8, 0.65])
    probs = model_probabilities(truth, accuracy=0.75)
    majority = accuracy(consensus(votes, method=MAJORITY), truth)
    alone = consensus(votes)  # no model yet: each chat starts from the classes' frequency
    informed = consensus(votes, probs)
    assert {c.method for c in (*alone.values(), *informed.values())} == {DAWID_SKENE}
    # the confusions (wrong answers go to the neighbour class) are learned: a lone reliable
    # annotator outvotes two who agree on the usual mistake
    assert accuracy(alone, truth) > majority
    assert accuracy(informed, truth) > max(accuracy(alone, truth), majority + 0.02)
    for got in (alone, informed):
        quality = np.array([c.quality for c in got.values()])
        right = np.array([got[i].label == truth[i] for i in range(len(truth))])
        assert abs(quality.mean() - right.mean()) < 0.03  # a posterior: calibrated
        assert quality[right].mean() > quality[~right].mean() + 0.1
        assert ((quality >= 1 / 3) & (quality <= 1)).all()


def test_dawid_skene_sides_with_the_model_only_where_the_answers_are_split() -> None:
    votes = [Vote(1, "a", POS, 0), Vote(1, "b", POS, 1)]
    votes += [Vote(2, "a", NEG, 2), Vote(2, "b", NEU, 3)]
    votes += [Vote(3, "a", POS, 4), Vote(3, "b", POS, 5)]
    probs = {1: [0.8, 0.1, 0.1], 2: [0.1, 0.8, 0.1], 3: [0.1, 0.1, 0.8]}
    got = consensus(votes, probs)
    assert (got[1].label, got[1].agreement) == (POS, 1.0)  # two answers outweigh the model
    assert (got[2].label, got[2].agreement) == (NEU, 0.5)  # a split: the model decides
    assert got[3].quality > max(got[1].quality, got[2].quality) > 0.5  # all three agree


def test_crowdlab_beats_majority_with_unequal_annotators() -> None:
    votes, truth = simulate(600, [0.9, 0.8, 0.65])
    probs = model_probabilities(truth, accuracy=0.75)
    crowd = consensus(votes, probs, CROWDLAB)
    majority = consensus(votes, method=MAJORITY)
    assert {c.method for c in crowd.values()} == {CROWDLAB}
    acc_crowd = np.mean([crowd[i].label == truth[i] for i in range(len(truth))])
    acc_majority = np.mean([majority[i].label == truth[i] for i in range(len(truth))])
    assert acc_crowd > acc_majority
    split = [c.quality for c in crowd.values() if c.agreement < 1]
    unanimous = [c.quality for c in crowd.values() if c.agreement == 1]
    assert np.mean(unanimous) > np.mean(split)
    assert all(0.0 <= c.quality <= 1.0 for c in crowd.values())


def test_items_without_probabilities_and_lone_annotators_fall_back_to_majority() -> None:
    votes, truth = simulate(40, [0.9, 0.8])
    probs = {i: p for i, p in model_probabilities(truth, 0.8).items() if i % 2 == 0}
    got = consensus(votes, probs, CROWDLAB)
    assert {got[i].method for i in range(0, 40, 2)} == {CROWDLAB}
    assert {got[i].method for i in range(1, 40, 2)} == {MAJORITY}
    for method in (DAWID_SKENE, CROWDLAB):
        lone = consensus([Vote(1, "a", POS)], {1: [0.8, 0.1, 0.1]}, method)[1]
        assert (lone.method, lone.label) == (MAJORITY, POS)


def test_bad_probability_rows_are_refused() -> None:
    votes = [Vote(1, "a", POS), Vote(1, "b", NEG)]
    for method in (DAWID_SKENE, CROWDLAB):
        with pytest.raises(QualityError, match="expected 3 probabilities"):
            consensus(votes, {1: [0.5, 0.5]}, method)
        with pytest.raises(QualityError, match="sum to zero"):
            consensus(votes, {1: [0.0, 0.0, 0.0]}, method)


def test_cohen_kappa_by_hand_and_against_scikit_learn() -> None:
    a = {1: NEG, 2: NEG, 3: POS, 4: POS}
    b = {1: NEG, 2: POS, 3: POS, 4: POS, 9: NEU}
    # observed 3/4, chance (2*1 + 2*3) / 16 = 1/2
    assert cohen_kappa(a, b) == pytest.approx(0.5)
    rng = np.random.default_rng(3)
    x = {i: LABELS[int(k)] for i, k in enumerate(rng.integers(0, 3, 50))}
    y = {i: (lab if rng.random() < 0.7 else NEU) for i, lab in x.items()}
    expected = cohen_kappa_score([x[i] for i in x], [y[i] for i in x])
    assert cohen_kappa(x, y) == pytest.approx(expected)
    assert cohen_kappa({1: POS}, {1: POS}) is None  # one shared item says nothing
    assert cohen_kappa({1: POS, 2: POS}, {1: POS, 2: POS}) is None  # no variation


def test_krippendorff_alpha_by_hand() -> None:
    votes = [
        Vote(1, "a", NEG), Vote(1, "b", NEG),
        Vote(2, "a", NEG), Vote(2, "b", POS),
        Vote(3, "a", POS), Vote(3, "b", POS),
        Vote(4, "a", NEU), Vote(4, "b", NEU),
        Vote(5, "a", POS),  # one annotator: not pairable, left out
    ]  # fmt: skip
    # coincidences: n_neg = 3, n_pos = 3, n_neu = 2 (n = 8), 2 disagreeing;
    # alpha = 1 - (n - 1) * 2 / sum_{c != k} n_c n_k = 1 - 7 * 2 / 42
    assert krippendorff_alpha(votes) == pytest.approx(1 - 14 / 42)
    assert krippendorff_alpha([Vote(1, "a", POS), Vote(1, "b", POS), Vote(2, "a", NEG),
                               Vote(2, "b", NEG)]) == pytest.approx(1.0)  # fmt: skip
    assert krippendorff_alpha([Vote(1, "a", POS)]) is None


def test_summaries_per_annotator() -> None:
    votes = [
        Vote(1, "a", NEG, 0, seconds=4.0), Vote(1, "b", NEG, 1, seconds=10.0),
        Vote(2, "a", POS, 2, seconds=6.0), Vote(2, "b", NEU, 3, seconds=20.0),
        Vote(2, "c", POS, 4), Vote(3, "a", NEU, 5, seconds=5.0),
    ]  # fmt: skip
    agreed = consensus(votes)
    by_name = {s.annotator: s for s in summarise(votes, agreed)}
    a, b, c = by_name["a"], by_name["b"], by_name["c"]
    assert [s.annotator for s in summarise(votes, agreed)] == ["a", "b", "c"]
    assert (a.labels, a.distribution) == (3, {NEG: 1, NEU: 1, POS: 1})
    assert (a.agreement, a.shared_items) == (1.0, 2)  # item 3 has no consensus of several
    assert (b.agreement, c.agreement) == (0.5, 1.0)
    assert a.kappa == {"b": pytest.approx(cohen_kappa({1: NEG, 2: POS}, {1: NEG, 2: NEU}))}
    assert "c" not in a.kappa  # one shared item
    assert (a.median_seconds, b.median_seconds, c.median_seconds) == (5.0, 15.0, None)


def test_planted_flips_are_found_first() -> None:
    rng = np.random.default_rng(0)
    n = 400
    truth = [LABELS[int(k)] for k in rng.integers(0, 3, n)]
    probs = []
    for gold in truth:
        row = rng.dirichlet([1, 1, 1]) * 0.3
        row[LABELS.index(gold)] += 0.7
        probs.append(list(row))
    flipped = set(rng.choice(n, size=40, replace=False).tolist())
    given = [LABELS[(LABELS.index(t) + 1) % 3] if i in flipped else t for i, t in enumerate(truth)]
    found = likely_errors(given, probs)
    assert len(set(found) & flipped) >= 36
    assert len(set(found) - flipped) <= 8
    top = likely_errors(given, probs, limit=10)
    assert len(top) == 10 and set(top) <= flipped
    assert likely_errors([], []) == []
    assert likely_errors([POS, POS], [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]) == []  # one class
    with pytest.raises(QualityError, match="2 labels but 1 probability rows"):
        likely_errors([POS, NEG], [[0.1, 0.1, 0.8]])


def _flag_in_a_daemon() -> None:
    probs = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]] * 10
    labels = [LABELS[i % 3] for i in range(30)]
    labels[0] = POS
    assert likely_errors(labels, probs) == [0]


def test_likely_errors_run_in_a_daemonic_process_as_in_a_celery_worker() -> None:
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(target=_flag_in_a_daemon, daemon=True)
    process.start()
    process.join(120)
    assert process.exitcode == 0
