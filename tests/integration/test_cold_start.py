"""The loop's first batch before any model (issue #17), with the real base model's
embeddings: SENTILOOP_COLD_START=zero-shot balances it over the labels by similarity to
SENTILOOP_LABEL_DESCRIPTIONS, where coverage of a skewed pool takes mostly its majority;
the choice is recorded with the selection round; a bad setting names itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.selection import choose
from orchestrator.settings import ConfigError, load_settings
from store import ChatIn
from tests.conftest import make_context

pytestmark = pytest.mark.integration

COMPLAINTS = [
    f"my {thing} arrived {how} and nobody answers my emails, this is {verdict}"
    for thing in ("blender", "parcel", "jacket", "phone", "lamp", "order", "sofa", "kettle")
    for how in ("broken", "late", "damaged")
    for verdict in ("a disgrace", "unacceptable")
]  # 48
THANKS = [
    "thank you so much, the support team was wonderful",
    "great service, love the new shoes, thanks!",
    "you are the best, thanks for the quick refund",
    "amazing help today, really happy, thank you",
    "lovely experience, thanks to your kind agent",
    "so pleased with the quick delivery, thank you all",
]
QUESTIONS = [
    "what are your opening hours on sunday?",
    "can I change the delivery address of my order?",
    "do you ship to canada?",
    "how do I return an item I bought online?",
    "is the blue jacket available in size m?",
    "where can I find my invoice?",
]
DESCRIPTIONS = {
    "negative": "this is a disgrace, my order arrived broken",
    "neutral": "a question about shipping or returns",
    "positive": "thank you, great service",
}


def _first_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> list[str]:
    ctx = make_context(
        tmp_path / how,
        monkeypatch,
        cold_start=how,
        label_descriptions=json.dumps(DESCRIPTIONS),
    )
    texts = COMPLAINTS + THANKS + QUESTIONS
    ctx.store.add_chats([ChatIn(f"c{i}", t, {}, None) for i, t in enumerate(texts)])
    batch = choose(ctx, project=1, room=9)
    assert len(set(batch.chat_ids)) == 9
    assert batch.selection.strategy == "cold_start"
    assert batch.selection.options["cold_start"] == how
    chats = ctx.store.chats_by_id(batch.chat_ids)
    return [chats[c].text for c in batch.chat_ids]


def test_zero_shot_balances_the_first_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zero_shot = _first_batch(tmp_path, monkeypatch, "zero-shot")
    coverage = _first_batch(tmp_path, monkeypatch, "coverage")

    def minority(texts: list[str]) -> int:
        return sum(t in THANKS or t in QUESTIONS for t in texts)

    assert sum(t in THANKS for t in zero_shot) >= 2, zero_shot
    assert sum(t in QUESTIONS for t in zero_shot) >= 2, zero_shot
    assert minority(zero_shot) > minority(coverage), (zero_shot, coverage)


def test_a_bad_cold_start_setting_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTILOOP_COLD_START", "kmeans")
    with pytest.raises(ConfigError, match="SENTILOOP_COLD_START"):
        load_settings()
    monkeypatch.setenv("SENTILOOP_COLD_START", "zero-shot")
    monkeypatch.setenv("SENTILOOP_LABEL_DESCRIPTIONS", json.dumps({"negative": "bad"}))
    with pytest.raises(ConfigError, match="SENTILOOP_LABEL_DESCRIPTIONS"):
        load_settings()
