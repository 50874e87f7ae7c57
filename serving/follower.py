"""Follows the registry: loads the production version (and the candidate for shadow scoring)
beside the one in service, verifies it, checks it, then swaps, all off the request path.

A promotion or rollback is a row in the store. Every service process polls it (and, on
PostgreSQL, is woken by a NOTIFY at the promotion's commit), so many processes on many
machines converge on the same version without talking to each other.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from serving.errors import ReloadError
from store import PRODUCTION_CHANNEL, ModelVersion, Store
from training import Scorer, apply_temperature, verify_checkpoint

__all__ = ["SELF_CHECK_TEXTS", "ModelFollower", "ServedModel", "self_check"]

logger = logging.getLogger(__name__)

#: What a new version must answer sensibly before it serves: made-up messages, no customer data.
SELF_CHECK_TEXTS = (
    "Thank you so much, the crew was wonderful and my bags arrived early!",
    "My flight was cancelled, nobody answers the phone and I missed my wedding. Unacceptable.",
    "What time does boarding start for the morning flight to Denver?",
    "ok",
)


@dataclass(frozen=True)
class ServedModel:
    """A verified, checked, loaded version: what answers requests."""

    version: int
    sha256: str
    temperature: float
    scorer: Scorer
    loaded_at: float

    def predict(self, texts: list[str]) -> npt.NDArray[np.float64]:
        """Calibrated (n, 3) probabilities."""
        return apply_temperature(self.scorer.predict_proba(texts), self.temperature)


class Events(Protocol):
    """What the follower reports (the service's metrics)."""

    def reloaded(self, model: ServedModel) -> None: ...

    def reload_failed(self, version: int) -> None: ...


@dataclass(frozen=True)
class _Failure:
    version: int
    sha256: str
    reason: str
    at: datetime
    retry_after: float


class ModelFollower:
    """Keeps ``current`` (production) and ``candidate`` (shadow) in step with the registry.

    A version that fails to load (missing or tampered checkpoint, wrong classes, a broken
    self-check) is not retried before ``retry_seconds``; meanwhile the old version serves
    and ``last_error`` says why. ``keys`` mirrors the active API keys (hash -> name), so a
    revocation takes effect within a poll.
    """

    def __init__(
        self,
        store: Store,
        make_scorer: Callable[[str], Scorer],
        events: Events,
        *,
        poll_seconds: float = 1.0,
        retry_seconds: float = 30.0,
        shadow: bool = True,
    ) -> None:
        self.store = store
        self.make_scorer = make_scorer
        self.events = events
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.shadow = shadow
        self.current: ServedModel | None = None
        self.candidate: ServedModel | None = None
        self.keys: dict[str, str] = {}
        self.registry_error: str | None = None
        self._failures: dict[int, _Failure] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target: int | None = None

    # -- state the service reports ------------------------------------------------------------

    @property
    def last_error(self) -> dict[str, Any] | None:
        """The failed reload of the version production names now, if any (for /readyz)."""
        failure = self._failures.get(self._target) if self._target is not None else None
        if failure is None:
            return None
        return {
            "version": failure.version,
            "reason": failure.reason,
            "at": failure.at.isoformat(),
        }

    @property
    def target(self) -> int | None:
        """The production version the registry names (None: none yet)."""
        return self._target

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Load what the registry names now (so the first request finds a model), then follow."""
        self.check()
        self._thread = threading.Thread(target=self._run, name="sentiloop-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with self._waiter() as wait:
            while not self._stop.is_set():
                wait(self.poll_seconds)
                if self._stop.is_set():
                    break
                try:
                    self.check()
                except Exception:  # the follower must outlive any one bad poll
                    logger.exception("checking the registry failed; serving on")

    @contextlib.contextmanager
    def _waiter(self) -> Iterator[Callable[[float], None]]:
        """Sleep between polls; on PostgreSQL wake up as soon as a promotion commits."""
        connection = self._listen()
        if connection is None:

            def sleep(timeout: float) -> None:
                self._stop.wait(timeout)

            yield sleep
            return

        lost = False

        def wait(timeout: float) -> None:
            nonlocal lost
            if lost:
                self._stop.wait(timeout)
                return
            # in slices, so that stop() is not kept waiting for a long poll interval
            deadline = time.monotonic() + timeout
            while not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    for _ in connection.notifies(timeout=min(remaining, 0.5), stop_after=1):
                        return  # a promotion or rollback committed
                except Exception as exc:  # a dropped connection: fall back to polling
                    logger.warning("lost the promotion channel (%s); polling", type(exc).__name__)
                    lost = True
                    self._stop.wait(remaining)
                    return

        try:
            yield wait
        finally:
            connection.close()

    def _listen(self) -> Any:
        if self.store.engine.dialect.name != "postgresql":
            return None
        try:
            import psycopg

            url = self.store.engine.url.set(drivername="postgresql")
            connection = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
            connection.execute(f"LISTEN {PRODUCTION_CHANNEL}")
            return connection
        except Exception as exc:
            logger.warning("cannot LISTEN for promotions (%s); polling", type(exc).__name__)
            return None

    # -- one poll -----------------------------------------------------------------------------

    def check(self) -> None:
        """Read the registry once and load whatever changed."""
        try:
            production = self.store.production()
            candidate = self._newest_candidate(production) if self.shadow else None
            self.keys = self.store.active_api_keys()
            self.registry_error = None
        except Exception as exc:
            # the store is down: keep serving what is loaded, say so on /readyz
            self.registry_error = f"registry unreachable: {type(exc).__name__}"
            logger.warning("%s; serving v%s on", self.registry_error, self.version_in_service)
            return
        self._target = production.number if production is not None else None
        if production is not None and not self._serves(self.current, production):
            loaded = self._try_load(production)
            if loaded is not None:
                self.current = loaded  # the swap: one reference assignment
                logger.info("now serving v%d", loaded.version)
                self.events.reloaded(loaded)
        if candidate is None:
            self.candidate = None
        elif not self._serves(self.candidate, candidate):
            self.candidate = self._try_load(candidate)

    @property
    def version_in_service(self) -> int | None:
        current = self.current
        return current.version if current is not None else None

    def _newest_candidate(self, production: ModelVersion | None) -> ModelVersion | None:
        return self.store.newest_candidate(production.number if production is not None else 0)

    @staticmethod
    def _serves(model: ServedModel | None, version: ModelVersion) -> bool:
        return (
            model is not None
            and model.version == version.number
            and model.sha256 == version.weights_sha256
            and model.temperature == version.temperature
        )

    def _try_load(self, version: ModelVersion) -> ServedModel | None:
        failure = self._failures.get(version.number)
        if (
            failure is not None
            and failure.sha256 == version.weights_sha256
            and time.monotonic() < failure.retry_after
        ):
            return None
        started = time.perf_counter()
        try:
            model = self.load(version)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ReloadError) else f"{type(exc).__name__}: {exc}"
            self._failures[version.number] = _Failure(
                version.number,
                version.weights_sha256,
                reason,
                datetime.now(UTC),
                time.monotonic() + self.retry_seconds,
            )
            logger.error("v%d not put in service: %s", version.number, reason)
            self.events.reload_failed(version.number)
            return None
        self._failures.pop(version.number, None)
        logger.info("v%d loaded in %.1f s", version.number, time.perf_counter() - started)
        return model

    def load(self, version: ModelVersion) -> ServedModel:
        """Verify the checkpoint against the registry's sha256, load it, check it."""
        from training import CheckpointError

        if version.checkpoint_deleted:
            raise ReloadError(f"v{version.number}'s checkpoint was deleted by retention")
        try:
            verify_checkpoint(Path(version.checkpoint_path), version.weights_sha256)
        except CheckpointError as exc:
            raise ReloadError(f"v{version.number} failed verification: {exc}") from None
        model = ServedModel(
            version=version.number,
            sha256=version.weights_sha256,
            temperature=version.temperature,
            scorer=self.make_scorer(version.checkpoint_path),
            loaded_at=time.time(),
        )
        self_check(model)
        return model


def self_check(model: ServedModel) -> None:
    """Score the built-in sample twice: finite probabilities that sum to one, the same both
    times (this also warms the model up before its first real request)."""
    texts = list(SELF_CHECK_TEXTS)
    first = model.predict(texts)
    again = model.predict(texts)
    if first.shape != (len(texts), 3) or not np.all(np.isfinite(first)):
        raise ReloadError(f"v{model.version} failed its self-check: non-finite probabilities")
    if not np.allclose(first.sum(axis=1), 1.0, atol=1e-3):
        raise ReloadError(f"v{model.version} failed its self-check: probabilities do not sum to 1")
    if not np.allclose(first, again, atol=1e-4):
        raise ReloadError(f"v{model.version} failed its self-check: answers are not repeatable")
