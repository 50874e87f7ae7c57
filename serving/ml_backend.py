"""Label Studio's ML backend protocol, served beside the API: Label Studio asks the
production version for pre-annotations (``/predict``) and tells us of new labels
(``/webhook``). Plain HTTP and JSON: no Label Studio package is needed here.

The protocol (label-studio-ml-backend, ``label_studio_ml/api.py``): ``GET /health`` (Label
Studio waits 1 s), ``POST /setup`` (3 s, answers the model version), ``POST /predict`` (100 s,
exactly one result per task) and ``POST /webhook`` (1 s). Label Studio asks again for a task
only when its predictions lack the current model version, so that string is our version name
and changes with every promotion.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from domain import LABELS
from serving.errors import NotReady
from serving.service import Service

__all__ = [
    "ANNOTATION_ACTIONS",
    "BASIC_AUTH_PATHS",
    "Interface",
    "add_ml_backend",
    "interface",
    "version_name",
]

logger = logging.getLogger(__name__)

#: Label Studio's events that change what the loop should learn.
ANNOTATION_ACTIONS = frozenset(
    {
        "ANNOTATION_CREATED",
        "ANNOTATIONS_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_DELETED",
        "TASKS_DELETED",
    }
)
#: Paths that take HTTP basic auth when it is on. ``/webhook`` takes none: the webhook
#: Label Studio creates when a backend is connected sends no credentials, and an event only
#: asks for a pull, which reads Label Studio itself (the payload is never trusted).
BASIC_AUTH_PATHS = ("/health", "/setup", "/predict")
#: Named in metrics.
ML_BACKEND_ROUTES = (*BASIC_AUTH_PATHS, "/webhook")

#: Called with the action of an annotation event; returns at once (it rings a doorbell).
OnAnnotation = Callable[[str], None]


def version_name(version: int) -> str:
    """The model version Label Studio sees (the same name the pushed pre-annotations carry)."""
    return f"v{version}"


@dataclass(frozen=True)
class Interface:
    """Where the text is and how the choices are named in a project's labeling config."""

    from_name: str = "sentiment"
    to_name: str = "text"
    text_key: str = "text"
    choices: tuple[str, str, str] = LABELS  # the choice value of each label, in LABELS order


@functools.lru_cache(maxsize=32)
def interface(label_config: str | None) -> Interface:
    """Read the first Choices control, the object it labels and that object's data key; a
    config that cannot be read gives sentiloop's own (``labeling.LABEL_CONFIG``)."""
    if not label_config:
        return Interface()
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return Interface()
    control = next(root.iter("Choices"), None)
    if control is None or not control.get("name") or not control.get("toName"):
        return Interface()
    to_name = str(control.get("toName"))
    key = "text"
    for element in root.iter():
        if element.get("name") == to_name and str(element.get("value", "")).startswith("$"):
            key = str(element.get("value"))[1:]
            break
    named: dict[str, str] = {}
    for choice in control.iter("Choice"):
        shown = choice.get("alias") or choice.get("value") or ""
        for candidate in (choice.get("alias"), choice.get("value")):
            if candidate and candidate.lower() in LABELS:
                named.setdefault(candidate.lower(), shown)
    choices = tuple(named.get(label, label) for label in LABELS)
    return Interface(str(control.get("name")), to_name, key, choices)  # type: ignore[arg-type]


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    project: str | None = None
    schema_: str | None = Field(None, alias="schema")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tasks: list[dict[str, Any]] = Field(max_length=10_000)
    label_config: str | None = None
    project: str | None = None


class WebhookEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action: str = Field(max_length=64)


def add_ml_backend(app: FastAPI, service: Service, on_annotation: OnAnnotation | None) -> None:
    """The four endpoints on ``app`` (at the root: Label Studio's URL is the service's)."""

    def current_name() -> str | None:
        model = service.follower.current
        return version_name(model.version) if model is not None else None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """No work: Label Studio gives it one second."""
        return {"status": "UP", "model_class": "sentiloop", "model_version": current_name()}

    @app.post("/setup")
    async def setup(body: SetupRequest) -> JSONResponse:
        name = current_name()
        if name is None:
            raise NotReady("no production version is in service yet")
        return JSONResponse({"model_version": name})

    @app.post("/predict")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        """One prediction per task, from one model version (read once)."""
        assert service.batcher is not None
        ui = interface(body.label_config)
        limit = service.options.limits.max_text_chars
        texts: dict[int, str] = {}
        for i, task in enumerate(body.tasks):
            data = task.get("data")
            value = data.get(ui.text_key) if isinstance(data, dict) else None
            if isinstance(value, str) and value.strip():
                texts[i] = value[:limit]  # the model reads the first tokens only
        if not texts and current_name() is None:
            raise NotReady("no production version is in service yet")
        order = sorted(texts)
        name = current_name() or ""
        probs: npt.NDArray[np.float64] = np.zeros((0, 3))
        if order:  # one call: every task is answered by the same version
            scored = await service.batcher.score([texts[i] for i in order])
            name, probs = version_name(scored.model.version), scored.probs
        by_task = {i: probs[row] for row, i in enumerate(order)}
        results = []
        for i in range(len(body.tasks)):
            p = by_task.get(i)
            if p is None:  # no text to read: an empty prediction keeps one result per task
                results.append({"result": [], "score": 0.0, "model_version": name})
                continue
            k = int(p.argmax())
            results.append(
                {
                    "result": [
                        {
                            "from_name": ui.from_name,
                            "to_name": ui.to_name,
                            "type": "choices",
                            "value": {"choices": [ui.choices[k]]},
                        }
                    ],
                    "score": round(float(p[k]), 6),
                    "model_version": name,
                }
            )
        return {"results": results, "model_version": name}

    @app.post("/webhook")
    async def webhook(event: WebhookEvent) -> dict[str, str]:
        """Rings the loop's doorbell for an annotation event and returns: no training here
        (Label Studio gives a webhook one second and never retries it)."""
        if event.action not in ANNOTATION_ACTIONS or on_annotation is None:
            return {"status": "ignored"}
        try:
            await asyncio.to_thread(on_annotation, event.action)
        except Exception as exc:  # the scheduled cycle pulls anyway; Label Studio won't retry
            logger.warning("annotation event not passed on: %s", type(exc).__name__)
            return {"status": "not passed on"}
        return {"status": "pull requested"}
