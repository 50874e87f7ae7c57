"""The orchestrator's side of consensus (issue #16): which chats of a batch are asked of
several annotators, the consensus with the choosing model's stored out-of-sample probabilities,
disputed chats at the cap, and the settings and guidelines that steer it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from domain import LABELS
from labeling import DEFAULT_GUIDELINES, guidelines_html
from orchestrator.consensus import overlaps, refresh
from orchestrator.settings import ConfigError, load_settings
from store import AnnotationIn, ChatIn, PredictionIn
from tests.conftest import make_context

pytestmark = pytest.mark.unit


def _pool(ctx: object, n: int) -> list[int]:
    store = ctx.store  # type: ignore[attr-defined]
    store.add_chats([ChatIn(f"c{i}", f"message {i}", {}, None) for i in range(n)])
    return sorted(store.chat_ids_by_source([f"c{i}" for i in range(n)]).values())


def _predict(ctx: object, version: int, rows: dict[int, list[float]]) -> None:
    ctx.store.add_predictions(  # type: ignore[attr-defined]
        version,
        [
            PredictionIn(c, (p[0], p[1], p[2]), LABELS[int(np.argmax(p))], max(p), 1 - max(p))
            for c, p in rows.items()
        ],
    )


def _answer(ls_id: int, task: int, chat: int, label: str, who: str) -> AnnotationIn:
    t = datetime(2026, 3, 1, 9, ls_id % 60, tzinfo=UTC)
    return AnnotationIn(ls_id, task, chat, label, who, False, t, t)


def test_the_least_sure_share_of_a_batch_is_asked_of_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path, monkeypatch, overlap_share="0.25", overlap="3")
    chats = _pool(ctx, 8)
    _predict(ctx, 1, {c: [0.9 - 0.05 * i, 0.05 + 0.05 * i, 0.05] for i, c in enumerate(chats)})
    got = overlaps(ctx, chats, model_version=1)
    assert got == {chats[7]: 3, chats[6]: 3}  # the least confident two of eight
    assert overlaps(ctx, chats, model_version=None) == {chats[0]: 3, chats[1]: 3}
    off = make_context(tmp_path / "off", monkeypatch, overlap_share="0")
    assert overlaps(off, chats, model_version=1) == {}


@pytest.mark.parametrize(("method", "min_quality"), [("dawid-skene", "0.8"), ("crowdlab", "0.6")])
def test_consensus_uses_the_choosing_models_probabilities_and_disputes_at_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, min_quality: str
) -> None:
    ctx = make_context(
        tmp_path, monkeypatch, max_annotations="2", consensus_method=method,
        consensus_min_quality=min_quality,
    )  # fmt: skip
    store = ctx.store
    chats = _pool(ctx, 30)
    store.reserve_tasks(
        1, chats, strategy="entropy", model_version=4, selection_scores=[0.5] * 30,
        overlaps=dict.fromkeys(chats, 2),
    )  # fmt: skip
    store.mark_pushed(1, {c: 100 + c for c in chats})
    rng = np.random.default_rng(0)
    truth = [LABELS[int(k)] for k in rng.integers(0, 3, len(chats))]
    rows, answers, n = {}, [], 0
    for chat, gold in zip(chats, truth, strict=True):
        p = np.full(3, 0.1)
        p[LABELS.index(gold)] = 0.8
        rows[chat] = list(p)
        for who, right in (("good", True), ("sloppy", rng.random() < 0.6)):
            n += 1
            wrong = LABELS[(LABELS.index(gold) + 1) % 3]
            answers.append(_answer(n, 100 + chat, chat, gold if right else wrong, who))
    _predict(ctx, 4, rows)
    store.upsert_annotations(1, answers)
    counts = refresh(ctx)
    stored = store.consensus_labels()
    assert counts["consensus"] == 30 == len(stored)
    assert {r.method for r in stored.values()} == {method}
    assert {r.model_version for r in stored.values()} == {4}
    # where they disagree, the model and the better annotator carry the label
    correct = sum(stored[c].label == g for c, g in zip(chats, truth, strict=True))
    assert correct >= 27
    # two answers is the cap here: an uncertain consensus is disputed, not re-asked
    assert {r.state for r in stored.values()} <= {"accepted", "disputed"}
    disputed = {c for c, r in stored.items() if r.state == "disputed"}
    assert all(stored[c].quality < float(min_quality) for c in disputed)
    assert {e.chat_id for e in store.training_examples()} == set(chats) - disputed
    assert refresh(ctx)["changed"] == 0  # the same answers: the same verdicts, no writes


def test_guidelines_from_a_file_or_built_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    assert load_settings().guidelines == DEFAULT_GUIDELINES
    text = tmp_path / "rules.txt"
    text.write_text("Negative: any complaint <even polite>.\n\nNeutral: questions.")
    monkeypatch.setenv("SENTILOOP_GUIDELINES_FILE", str(text))
    assert load_settings().guidelines == (
        "<p>Negative: any complaint &lt;even polite&gt;.</p>\n<p>Neutral: questions.</p>"
    )
    assert guidelines_html("<b>as is</b>", ".HTML") == "<b>as is</b>"
    monkeypatch.setenv("SENTILOOP_GUIDELINES_FILE", str(tmp_path / "missing.html"))
    with pytest.raises(ConfigError, match=r"SENTILOOP_GUIDELINES_FILE: .*cannot read"):
        load_settings()


def test_an_unknown_consensus_method_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    assert load_settings().consensus_method == "dawid-skene"
    monkeypatch.setenv("SENTILOOP_CONSENSUS_METHOD", "vote")
    with pytest.raises(ConfigError, match=r"SENTILOOP_CONSENSUS_METHOD: .*dawid-skene"):
        load_settings()


def test_max_annotations_below_overlap_names_both_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.setenv("SENTILOOP_OVERLAP", "3")
    monkeypatch.setenv("SENTILOOP_MAX_ANNOTATIONS", "2")
    with pytest.raises(ConfigError, match=r"SENTILOOP_MAX_ANNOTATIONS: .*SENTILOOP_OVERLAP"):
        load_settings()


def test_a_consensus_no_annotator_gave_is_not_accepted() -> None:
    from orchestrator.consensus import _row
    from quality import Consensus
    from store import AnswerGroup, LabelTask

    task = LabelTask(id=1, chat_id=5, project_id=1, ls_task_id=9, state="annotated", overlap=2)
    group = AnswerGroup(5, [], task)
    sided = Consensus(5, "positive", quality=0.9, agreement=0.0, votes=2, method="crowdlab")
    assert _row(group, sided, min_quality=0.6, most=3).state == "reask"
    agreed = Consensus(5, "positive", quality=0.9, agreement=0.5, votes=2, method="crowdlab")
    assert _row(group, agreed, min_quality=0.6, most=3).state == "accepted"
