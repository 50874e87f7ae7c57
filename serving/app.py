"""The HTTP layer: routes, API keys, limits, errors and access logs.

Errors never echo the request (FastAPI's default 422 body repeats the input, i.e. the
customer's message): they say where and what, not the content.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.errors import LimitExceeded, NotReady
from serving.keys import hash_key
from serving.ml_backend import BASIC_AUTH_PATHS, ML_BACKEND_ROUTES, OnAnnotation, add_ml_backend
from serving.schemas import RouteRequest, RouteResponse, SentimentRequest, SentimentResponse
from serving.service import Service

__all__ = ["create_app"]

access_log = logging.getLogger("sentiloop.access")
logger = logging.getLogger(__name__)

#: Routes named in metrics; any other path counts as "other" (bounded label values).
ROUTES = ("/v1/sentiment", "/v1/route", "/livez", "/readyz", "/metrics", *ML_BACKEND_ROUTES)
#: Routes that score, counted as arriving work by the micro-batcher.
SCORING = ("/v1/sentiment", "/v1/route", "/predict")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _unauthorized(challenge: str, message: str) -> JSONResponse:
    response = _error(401, message)
    response.headers["WWW-Authenticate"] = challenge
    return response


class Guard:
    """Pure ASGI middleware: body size limit, metrics and the access log for every request."""

    def __init__(
        self,
        app: ASGIApp,
        service: Service,
        max_body_bytes: int,
        basic_auth: bool,
        predict_max_body_bytes: int,
    ) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.basic_auth = basic_auth
        # Label Studio sends a whole selection of tasks in one /predict
        self.predict_max_body_bytes = predict_max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = 500
        state = scope.setdefault("state", {})

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if path.startswith("/v1/"):
                name = self._key_name(scope)
                if name is None:
                    await _unauthorized(
                        "Bearer",
                        "missing or unknown API key: send 'Authorization: Bearer <key>' "
                        "(create one with `sentiloop keys create NAME`)",
                    )(scope, receive, send_wrapper)
                    return
                state["key_name"] = name
            elif self.basic_auth and path in BASIC_AUTH_PATHS:
                name = self._basic_name(scope)
                if name is None:
                    await _unauthorized(
                        'Basic realm="sentiloop"',
                        "missing or unknown credentials: Label Studio's basic auth takes any "
                        "user name and an API key as the password (`sentiloop keys create`)",
                    )(scope, receive, send_wrapper)
                    return
                state["key_name"] = name
            if path in SCORING:
                self.service.in_flight += 1
                state["counted"] = True
            limit, setting = (
                (self.predict_max_body_bytes, "SENTILOOP_ML_BACKEND_MAX_BODY_BYTES")
                if path == "/predict"
                else (self.max_body_bytes, "SENTILOOP_SERVE_MAX_BODY_BYTES")
            )
            body = await self._read_body(receive, limit)
            if body is None:
                response = _error(413, f"request body over {limit:,} bytes ({setting})")
                await response(scope, receive, send_wrapper)
            else:
                await self.app(scope, _replay(body, receive), send_wrapper)
        finally:
            if state.pop("counted", False):
                self.service.in_flight -= 1
            elapsed = time.perf_counter() - started
            m = self.service.metrics
            m.latency.labels(route).observe(elapsed)
            m.requests.labels(route, str(status)).inc()
            if status >= 400:
                m.errors.labels(route).inc()
            if route not in ("/livez", "/readyz", "/metrics") and access_log.isEnabledFor(
                logging.INFO
            ):
                access_log.info(
                    json.dumps(
                        {
                            "method": scope["method"],
                            "path": route,
                            "status": status,
                            "ms": round(elapsed * 1000, 2),
                            "key": state.get("key_name"),
                            "messages": state.get("messages"),
                            "model_version": state.get("model_version"),
                        }
                    )
                )

    def _key_name(self, scope: Scope) -> str | None:
        """The name of the request's active key: ``Authorization: Bearer`` or ``X-API-Key``."""
        key = ""
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                key = value[7:].strip().decode("latin-1")
            elif name == b"x-api-key" and not key:
                key = value.strip().decode("latin-1")
        return self.service.key_name(hash_key(key)) if key else None

    def _basic_name(self, scope: Scope) -> str | None:
        """The key name of ``Authorization: Basic`` whose password is an active key."""
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value[:6].lower() == b"basic ":
                try:
                    decoded = base64.b64decode(value[6:].strip(), validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    return None
                _, _, password = decoded.partition(":")
                return self.service.key_name(hash_key(password)) if password else None
        return None

    async def _read_body(self, receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None when it exceeds the limit (the rest is not read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def create_app(
    service: Service,
    *,
    max_body_bytes: int = 1 << 20,
    on_annotation: OnAnnotation | None = None,
    ml_backend_auth: bool = True,
    predict_max_body_bytes: int = 64 << 20,
) -> FastAPI:
    """The API (``/v1``, API keys), probes and metrics, and Label Studio's ML backend
    protocol (basic auth with an API key as the password, unless ``ml_backend_auth`` is
    off); ``on_annotation`` receives the annotation events of ``/webhook``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="sentiloop",
        summary="Customer-message sentiment and escalation routing from the production model.",
        version="1",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc and msg only: pydantic's "input" would echo the customer's message
        problems = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()[:20]
        ]
        message = "invalid request"
        if "json" not in request.headers.get("content-type", ""):
            message += ": send a JSON body with 'Content-Type: application/json'"
        return _error(422, message, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(LimitExceeded)
    async def _limit(_: Request, exc: LimitExceeded) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(NotReady)
    async def _not_ready(_: Request, exc: NotReady) -> JSONResponse:
        return _error(503, f"not ready: {exc}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected %s while answering a request", type(exc).__name__, exc_info=exc)
        return _error(500, "internal error (logged)")

    @app.post("/v1/sentiment", response_model=SentimentResponse)
    async def sentiment(body: SentimentRequest, request: Request) -> SentimentResponse:
        """Label, calibrated probabilities and 0..1 score of each message."""
        request.state.messages = len(body.messages)
        model, results = await service.classify(body.messages)
        request.state.model_version = model.version
        return SentimentResponse(model_version=model.version, results=results)

    @app.post("/v1/route", response_model=RouteResponse)
    async def route(body: RouteRequest, request: Request) -> RouteResponse:
        """escalate or normal for a conversation, from its customer turns, with the reason."""
        request.state.messages = len(body.messages)
        answer = await service.route(body.conversation_id, body.messages)
        request.state.model_version = answer.model_version
        return answer

    @app.get("/livez")
    async def livez() -> dict[str, bool]:
        return {"alive": True}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, body = service.readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        service.readiness()  # refreshes the target-version gauge
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_ml_backend(app, service, on_annotation)
    app.add_middleware(
        Guard,
        service=service,
        max_body_bytes=max_body_bytes,
        basic_auth=ml_backend_auth,
        predict_max_body_bytes=predict_max_body_bytes,
    )
    return app
