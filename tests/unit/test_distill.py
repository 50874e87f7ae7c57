"""The distillation loss and data (issue #19, acceptance 2): soft labels, human labels
weighted above a teacher's, nothing of the evaluation set or of the human labels taken as a
pseudo-label, and one loss that is plain cross-entropy on human labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.distill import SOFT_WEIGHT, distillation_set, human_set, soft_cross_entropy
from training.errors import TrainingError
from training.train import class_weights

pytestmark = pytest.mark.unit

TEACHER = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.2, 0.6, 0.2]])


def test_on_one_hot_rows_the_loss_is_class_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 0, 1, 2, 0, 1])
    weight = class_weights(labels.tolist())
    expected = nn.CrossEntropyLoss(weight=weight)(logits, labels)
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    got = soft_cross_entropy(logits, one_hot, torch.ones(6), weight)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(
        soft_cross_entropy(logits, one_hot, torch.ones(6)), nn.CrossEntropyLoss()(logits, labels)
    )


def test_the_loss_follows_soft_targets_and_weights() -> None:
    logits = torch.zeros(1, 3, requires_grad=True)
    target = torch.tensor([[0.7, 0.2, 0.1]])
    soft_cross_entropy(logits, target, torch.ones(1)).backward()
    # the gradient of cross-entropy is softmax - target: it pulls toward the teacher's row
    assert torch.allclose(logits.grad, torch.full((1, 3), 1 / 3) - target, atol=1e-6)  # type: ignore[arg-type]
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    two = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    heavy_first = soft_cross_entropy(two, rows, torch.tensor([1.0, 0.1]))
    heavy_second = soft_cross_entropy(two, rows, torch.tensor([0.1, 1.0]))
    assert heavy_first < heavy_second  # the well-predicted row weighs more: lower loss


def test_human_labels_come_first_and_weigh_more_than_the_teachers() -> None:
    data = distillation_set(
        ["great crew", "lost my bag"],
        ["positive", "negative"],
        ["flight late again", "thanks a lot", "where is gate 4", "seat was fine"],
        TEACHER,
    )
    assert data.n_human == 2 and len(data) == 6
    assert data.texts[:2] == ["great crew", "lost my bag"]
    assert data.targets[:2].tolist() == [[0, 0, 1], [1, 0, 0]]
    assert np.allclose(data.targets[2:], TEACHER)
    assert data.weights.tolist() == [1, 1] + [SOFT_WEIGHT] * 4
    assert 0 < SOFT_WEIGHT < 1
    assert np.allclose(data.targets.sum(axis=1), 1)


def test_no_pseudo_label_for_a_held_out_or_human_labelled_text() -> None:
    data = distillation_set(
        ["lost my bag"],
        ["negative"],
        ["Lost my  bag", "thanks a lot", "where is gate 4", "seat was fine"],
        TEACHER,
        held_out=["WHERE is gate 4"],
    )
    assert data.texts == ["lost my bag", "thanks a lot", "seat was fine"]
    assert np.allclose(data.targets[1:], TEACHER[[1, 3]])
    assert data.pool_rows == (1, 3)  # the lineage names the pool chats the student learned


def test_bad_inputs_are_refused_with_the_reason() -> None:
    with pytest.raises(TrainingError, match="shape"):
        distillation_set(["a"], ["negative"], ["b", "c"], TEACHER)
    with pytest.raises(TrainingError, match="weight must lie in"):
        distillation_set(["a"], ["negative"], list("bcde"), TEACHER, soft_weight=1.0)
    with pytest.raises(TrainingError, match="unknown labels"):
        human_set(["a"], ["angry"])
    with pytest.raises(TrainingError, match="2 texts but 1 labels"):
        human_set(["a", "b"], ["negative"])


# -- self-training (issue #17): the model's own surest opinions as pseudo-labels -------------

POOL = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "Already  Labelled", "in dev"]
OWN = np.array(
    [
        [0.99, 0.005, 0.005],  # p0: negative, surest
        [0.95, 0.03, 0.02],  # p1: negative
        [0.91, 0.05, 0.04],  # p2: negative
        [0.80, 0.15, 0.05],  # p3: negative, under the floor
        [0.05, 0.93, 0.02],  # p4: neutral
        [0.02, 0.03, 0.95],  # p5: positive, but no human said positive
        [0.05, 0.90, 0.05],  # p6: neutral, at the floor
        [0.99, 0.005, 0.005],  # a text a human labelled (other case and spacing)
        [0.005, 0.99, 0.005],  # a text of the evaluation set
    ]
)


def test_self_training_takes_per_class_the_surest_up_to_its_cap() -> None:
    from training.distill import self_training_set

    human = ["already labelled", "a", "b", "c"]
    labels = ["negative", "negative", "neutral", "neutral"]
    data, taken = self_training_set(
        human, labels, POOL, OWN, min_confidence=0.9, per_human=1.0, held_out=["IN DEV"]
    )
    # negative: 2 human labels -> at most 2, the surest (p0, p1; p2 is sure enough but over the
    # cap, p3 under the floor); neutral: p4 and p6 (>= 0.9); positive: no human label, none
    assert data.texts[4:] == ["p0", "p1", "p4", "p6"]
    assert data.pool_rows == (0, 1, 4, 6)
    assert taken.counts == {"negative": 2, "neutral": 2, "positive": 0}
    assert taken.thresholds == {"negative": 0.95, "neutral": pytest.approx(0.9), "positive": None}
    assert data.targets[4:].tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert data.weights.tolist() == [1, 1, 1, 1] + [SOFT_WEIGHT] * 4
    assert data.n_human == 4
    assert taken.record()["pseudo_labels"] == taken.counts
    assert taken.record()["pseudo_thresholds"] == {
        "negative": 0.95, "neutral": 0.9, "positive": None
    }  # fmt: skip


def test_self_training_never_labels_what_a_human_or_the_evaluation_set_holds() -> None:
    from training.distill import self_training_set

    data, taken = self_training_set(
        ["Already labelled"], ["negative"], POOL, OWN,
        min_confidence=0.5, per_human=100, held_out=["in   DEV"],
    )  # fmt: skip
    assert "Already  Labelled" not in data.texts[1:] and "in dev" not in data.texts
    assert taken.counts == {"negative": 4, "neutral": 0, "positive": 0}  # a negative human only
    none, nothing = self_training_set(
        ["x"], ["neutral"], POOL, OWN, min_confidence=0.9, per_human=0
    )
    assert len(none) == 1 and nothing.counts == {"negative": 0, "neutral": 0, "positive": 0}


def test_self_training_refuses_bad_inputs() -> None:
    from training.distill import self_training_set

    with pytest.raises(TrainingError, match="shape"):
        self_training_set(["x"], ["neutral"], POOL, OWN[:3], min_confidence=0.9, per_human=1)
    with pytest.raises(TrainingError, match="weight"):
        self_training_set(
            ["x"], ["neutral"], POOL, OWN, min_confidence=0.9, per_human=1, weight=1.0
        )
    with pytest.raises(TrainingError, match="min_confidence"):
        self_training_set(["x"], ["neutral"], POOL, OWN, min_confidence=0, per_human=1)
