"""Escalation routing: which conversations go to the senior queue, and why.

Pure logic on scored customer turns, so the policy can be tested, tuned on dev.csv
(``benchmarks/routing.py``) and explained in one sentence per decision. Agent turns never
count: an agent apologising ("sorry for the delay") reads negative but says nothing about
the customer's mood.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "DECISIONS",
    "ConversationBook",
    "Decision",
    "RoutingPolicy",
    "Turn",
    "decide",
]

#: The answers of ``POST /v1/route``.
DECISIONS = ("escalate", "normal")


@dataclass(frozen=True)
class RoutingPolicy:
    """The thresholds (settings ``SENTILOOP_ROUTE_*``; docs/routing.md gives the precision and
    recall of each on dev.csv).

    A conversation is escalated when its latest customer turn is strongly negative
    (``P(negative) >= strong_negative``), when the mean score of its last ``window`` customer
    turns (at least ``min_turns`` of them) is at most ``low_mean``, or when the score fell by
    at least ``fall`` within that window down to a latest score of at most ``low_mean``.
    """

    strong_negative: float = 0.85
    low_mean: float = 0.2
    fall: float = 0.4
    window: int = 2
    min_turns: int = 2


@dataclass(frozen=True)
class Turn:
    """One scored customer turn: what routing remembers of it (no text)."""

    message_id: str
    score: float  # 0 = surely negative .. 1 = surely positive
    p_negative: float
    sent_at: float  # epoch seconds: the client's sent_at, else the arrival time


@dataclass(frozen=True)
class Decision:
    decision: str  # one of DECISIONS
    reason: str
    turns: int  # customer turns the decision looked at


def decide(turns: Sequence[Turn], policy: RoutingPolicy) -> Decision:
    """The routing decision for a conversation's customer turns (oldest first)."""
    if not turns:
        return Decision("normal", "no customer turn yet", 0)
    recent = list(turns[-policy.window :])
    latest = recent[-1]
    if latest.p_negative >= policy.strong_negative:
        return Decision(
            "escalate",
            f"latest customer turn strongly negative (P(negative) {latest.p_negative:.2f} "
            f">= {policy.strong_negative:.2f})",
            len(recent),
        )
    if len(recent) >= policy.min_turns:
        mean = sum(t.score for t in recent) / len(recent)
        if mean <= policy.low_mean:
            return Decision(
                "escalate",
                f"score low over the last {len(recent)} customer turns "
                f"(mean {mean:.2f} <= {policy.low_mean:.2f})",
                len(recent),
            )
        peak = max(t.score for t in recent[:-1])
        if peak - latest.score >= policy.fall and latest.score <= policy.low_mean:
            return Decision(
                "escalate",
                f"score fell from {peak:.2f} to {latest.score:.2f} over the last "
                f"{len(recent)} customer turns",
                len(recent),
            )
    return Decision(
        "normal", f"latest customer score {latest.score:.2f}, no escalation rule met", len(recent)
    )


@dataclass
class _History:
    turns: list[Turn] = field(default_factory=list)
    touched: float = 0.0


class ConversationBook:
    """Recent customer turns per conversation, bounded in size and time.

    At most ``max_turns`` turns per conversation (the oldest go first) and ``max_conversations``
    conversations (the least recently touched go first); a conversation untouched for
    ``ttl_seconds`` is forgotten. A turn already recorded (same message id) is not counted
    twice, so a client retrying a request does not tilt the decision. Not thread-safe: the
    service uses it from its event loop only.
    """

    def __init__(
        self, *, max_conversations: int = 100_000, max_turns: int = 20, ttl_seconds: float = 3600
    ) -> None:
        self.max_conversations = max_conversations
        self.max_turns = max_turns
        self.ttl_seconds = ttl_seconds
        self._books: OrderedDict[str, _History] = OrderedDict()

    def __len__(self) -> int:
        return len(self._books)

    def record(self, conversation_id: str, turn: Turn, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.expire(now)
        history = self._books.get(conversation_id)
        if history is None:
            history = self._books[conversation_id] = _History()
            while len(self._books) > self.max_conversations:
                self._books.popitem(last=False)
        history.touched = now
        self._books.move_to_end(conversation_id)
        if any(t.message_id == turn.message_id for t in history.turns):
            return
        keys = [t.sent_at for t in history.turns]
        history.turns.insert(bisect.bisect_right(keys, turn.sent_at), turn)
        del history.turns[: -self.max_turns]

    def turns(self, conversation_id: str, now: float | None = None) -> list[Turn]:
        now = time.monotonic() if now is None else now
        self.expire(now)
        history = self._books.get(conversation_id)
        return list(history.turns) if history is not None else []

    def expire(self, now: float) -> int:
        """Forget conversations untouched for ``ttl_seconds``; the oldest sit at the front."""
        dropped = 0
        while self._books:
            first = next(iter(self._books.values()))
            if now - first.touched < self.ttl_seconds:
                break
            self._books.popitem(last=False)
            dropped += 1
        return dropped


def epoch(sent_at: datetime | None, default: float) -> float:
    """A turn's ordering key: the client's timestamp when given."""
    return sent_at.timestamp() if sent_at is not None else default
