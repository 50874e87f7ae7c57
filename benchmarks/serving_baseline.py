"""The serving benchmark's baseline: the obvious FastAPI service, for comparison.

transformers' ``pipeline`` is called once per request from a plain ``def`` endpoint (FastAPI
runs it in its thread pool), with no micro-batching, no quantisation and no registry: what a
first version of the service would look like. Same request and response shape as
``POST /v1/sentiment`` for single messages. The checkpoint comes from ``BASELINE_MODEL``:

    BASELINE_MODEL=DIR python -m uvicorn benchmarks.serving_baseline:app --port 8001
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

app = FastAPI(title="sentiment baseline")
classify: Any = pipeline("text-classification", model=os.environ["BASELINE_MODEL"], top_k=None)


class Message(BaseModel):
    id: str
    text: str
    conversation_id: str | None = None
    speaker: str = "customer"


class Request(BaseModel):
    messages: list[Message]


@app.get("/livez")
def livez() -> dict[str, bool]:
    return {"alive": True}


@app.post("/v1/sentiment")
def sentiment(body: Request) -> dict[str, Any]:
    """One pipeline call per request, in FastAPI's thread pool."""
    outputs: Any = classify([m.text for m in body.messages])
    results = []
    for message, scores in zip(body.messages, outputs, strict=True):
        probs = {str(s["label"]).lower(): round(float(s["score"]), 6) for s in scores}
        results.append(
            {
                "id": message.id,
                "label": max(probs, key=lambda k: probs[k]),
                "probabilities": probs,
                "score": round(probs.get("positive", 0.0) + 0.5 * probs.get("neutral", 0.0), 6),
                "model_version": 1,
                "conversation_id": message.conversation_id,
                "speaker": message.speaker,
            }
        )
    return {"model_version": 1, "results": results}
