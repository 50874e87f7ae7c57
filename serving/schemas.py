"""The service's request and response bodies (the public HTTP contract, versioned by /v1)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

__all__ = [
    "MessageIn",
    "MessageOut",
    "RouteRequest",
    "RouteResponse",
    "SentimentRequest",
    "SentimentResponse",
]

SPEAKERS = ("customer", "agent")


class MessageIn(BaseModel):
    """One chat message. Unknown fields are ignored, so a platform may send more."""

    model_config = ConfigDict(frozen=True)

    id: StrictStr = Field(min_length=1, max_length=255, description="The platform's message id.")
    text: StrictStr = Field(min_length=1, description="The message (never logged or stored).")
    conversation_id: StrictStr | None = Field(None, min_length=1, max_length=255)
    speaker: Literal["customer", "agent"] = "customer"
    sent_at: datetime | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value


class SentimentRequest(BaseModel):
    messages: list[MessageIn] = Field(min_length=1)


class RouteRequest(BaseModel):
    conversation_id: StrictStr = Field(min_length=1, max_length=255)
    messages: list[MessageIn] = Field(
        default_factory=list,
        description="The conversation's new turns (may be empty: decide on what was seen).",
    )


class MessageOut(BaseModel):
    id: str
    label: Literal["negative", "neutral", "positive"]
    probabilities: dict[str, float]
    score: float = Field(description="0 = surely negative .. 1 = surely positive.")
    model_version: int
    conversation_id: str | None = None
    speaker: Literal["customer", "agent"] = "customer"


class SentimentResponse(BaseModel):
    model_version: int
    results: list[MessageOut]


class RouteResponse(BaseModel):
    conversation_id: str
    decision: Literal["escalate", "normal"]
    reason: str
    customer_turns: int = Field(description="Customer turns the decision looked at.")
    model_version: int | None
    results: list[MessageOut] = Field(description="The new messages' sentiment.")
