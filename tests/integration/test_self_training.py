"""Self-training in the loop (issue #17), with real BERT training: a full retrain with
SENTILOOP_SELF_TRAINING learns, beside the human labels, production's surest stored opinions
of the unlabelled chats, per class under its floor and cap; the pseudo-labels are recorded
with the version (counts, thresholds, the chats) and never as annotations, none is a text of
the evaluation set, and erasing a pseudo-labelled chat flags the version."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import registry
from orchestrator.access import create_operator
from orchestrator.cli import app
from orchestrator.cli_common import console
from orchestrator.context import Context
from orchestrator.erasure import versions_with_erased
from orchestrator.evaluation import eval_set
from orchestrator.settings import ConfigError, load_settings
from orchestrator.step_score import score
from store import AnnotationIn, ChatIn, ErasureIn
from tests.conftest import airline_rows, dev_sample

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path: Path, airline: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    dev = dev_sample(airline, tmp_path / "dev.csv", 150)
    for name, value in {
        "SENTILOOP_HOME": str(tmp_path / "home"),
        "SENTILOOP_EVAL_FILE": str(dev),
        "SENTILOOP_SELF_TRAINING": "true",
        "SENTILOOP_SELF_TRAINING_MIN_CONFIDENCE": "0.5",
        "SENTILOOP_SELF_TRAINING_PER_HUMAN": "1",
        "SENTILOOP_RETRAIN_MODE": "full",
        "SENTILOOP_PROMOTE": "manual",
        "SENTILOOP_TRAIN_EPOCHS": "2",
        "SENTILOOP_TRAIN_MIN_STEPS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    context = Context.from_settings(load_settings())
    context.store.init()
    yield context
    context.store.dispose()


def _quiet(stage: str, done: int, total: int) -> None:
    return None


def test_a_self_trained_retrain(
    ctx: Context, airline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ctx.store
    rows = random.Random(5).sample(airline_rows(airline / "pool.csv"), 400)
    store.add_chats([ChatIn(r["chat_id"], r["text"], {}, None) for r in rows])
    # a pool chat with the text of an evaluation chat: never pseudo-labelled
    held_text = eval_set(ctx, []).texts[0]
    store.add_chats([ChatIn("copy-of-dev", held_text.upper(), {}, None)])
    ids = store.chat_ids_by_source([r["chat_id"] for r in rows] + ["copy-of-dev"])
    now = datetime.now(UTC)

    def label(start: int, batch: list[dict[str, str]]) -> None:
        store.upsert_annotations(
            1,
            [
                AnnotationIn(start + i, 5000 + start + i, ids[r["chat_id"]], r["label"], "gold",
                             False, now, now)
                for i, r in enumerate(batch)
            ],
        )  # fmt: skip

    label(1, rows[:120])
    first = registry.retrain(ctx, _quiet)  # no production yet: nothing to self-train on
    v1 = store.version(first["version"])
    assert v1 is not None and v1.teacher is None and not v1.pool_chat_ids
    admin = create_operator(ctx.settings, store, "root", "admin")[1]
    registry.promote(ctx, v1.number, by=admin, force=True, reason="first")
    assert score(ctx, _quiet)["scored"] >= 280  # production's calibrated opinions, stored

    label(121, rows[120:150])
    second = registry.retrain(ctx, _quiet)
    v2 = store.version(second["version"])
    assert v2 is not None and v2.teacher == v1.number, second
    record = v2.train_config["distillation"]
    assert record["self_training"] is True and record["teacher"] == v1.number
    assert "self-trained on v1" in v2.train_config["mode_reason"]
    # per class: no more than SENTILOOP_SELF_TRAINING_PER_HUMAN per human label of it, each
    # at least as sure as the floor, the surest first (the threshold is the least sure taken)
    human = Counter(r["label"] for r in rows[:150])
    counts, thresholds = record["pseudo_labels"], record["pseudo_thresholds"]
    assert sum(counts.values()) == len(v2.pool_chat_ids) == second["soft_labels"] > 0
    for name, n in counts.items():
        assert n <= human[name]
        assert (thresholds[name] is None) == (n == 0)
        assert n == 0 or thresholds[name] >= 0.5
    opinions = store.prediction_for(v2.pool_chat_ids, v1.number)
    assert Counter(opinions[c].label for c in v2.pool_chat_ids) == +Counter(counts)
    for c in v2.pool_chat_ids:
        p = opinions[c]
        assert max(p.p_negative, p.p_neutral, p.p_positive) >= 0.5 - 1e-6
    # only unlabelled chats, none of the evaluation set; pseudo-labels are no annotations
    labelled = {ids[r["chat_id"]] for r in rows[:150]}
    assert not set(v2.pool_chat_ids) & labelled
    assert ids["copy-of-dev"] not in v2.pool_chat_ids
    assert sorted(v2.annotation_ids) == list(range(1, 151))
    assert store.lineage(v2.number) == list(range(1, 151))

    monkeypatch.setattr(console, "width", 250)  # tables on one line each
    shown = CliRunner().invoke(app, ["models", "list"])
    assert "self-trained on v1" in shown.output, shown.output
    detail = CliRunner().invoke(app, ["models", "show", str(v2.number)])
    assert "self-training" in detail.output and f"as v{v1.number} read them" in detail.output

    # erasing a pseudo-labelled chat flags the version that learned it
    store.erase_chats([v2.pool_chat_ids[0]], ErasureIn("root", None, "customer asked", "chat"))
    assert v2.number in versions_with_erased(ctx)


def test_self_training_and_a_teacher_are_not_both_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.setenv("SENTILOOP_TEACHER_MODEL", "all-mpnet-base-v2")
    monkeypatch.setenv("SENTILOOP_SELF_TRAINING", "true")
    with pytest.raises(ConfigError, match=r"SENTILOOP_SELF_TRAINING: .*SENTILOOP_TEACHER_MODEL"):
        load_settings()
