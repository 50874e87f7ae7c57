"""Micro-batching: requests arriving together are scored in one model call.

One inference thread runs the model (torch uses every core inside one call; two calls at
once only fight over them). While it works, new requests queue up; the next call takes all
of them, so under load the batch grows with the traffic and the per-message cost falls,
while a lone request waits at most ``max_wait_s`` for company.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from serving.errors import NotReady
from serving.follower import ServedModel
from serving.memory import Trimmer

__all__ = ["MicroBatcher", "Scored"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """A request's answer: the version that scored it and its calibrated probabilities."""

    model: ServedModel
    probs: npt.NDArray[np.float64]


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[Scored] = field(repr=False)


class MicroBatcher:
    """``await score(texts)`` from the event loop; scoring happens in one worker thread.

    Each call is answered by one model snapshot (read once per batch), so a response
    names the version that actually scored it, also during a swap.
    """

    def __init__(
        self,
        current: Callable[[], ServedModel | None],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.002,
        on_batch: Callable[[ServedModel, list[str], npt.NDArray[np.float64]], None] | None = None,
        arriving: Callable[[], int] | None = None,
    ) -> None:
        self.current = current
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        # requests received but not yet answered (the HTTP layer counts them); a batch waits
        # for company only while more of them are on their way than it holds, so a lone
        # request never waits (measured: the 2 ms wait was 15 % of a lone request's time)
        self.arriving = arriving
        self.trimmer = Trimmer()
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentiloop-infer")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish every queued request, then stop (graceful shutdown)."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
        self._executor.shutdown(wait=True)

    async def score(self, texts: list[str]) -> Scored:
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(texts, future))
        return await future

    async def _loop(self) -> None:
        while True:
            job = await self._queue.get()
            if job is None:
                return
            jobs, stopping = await self._gather(job)
            await self._run(jobs)
            if stopping:
                return

    async def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus whatever joins within the bounded wait, up to ``max_batch``."""
        loop = asyncio.get_running_loop()
        jobs, size = [first], len(first.texts)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0 or (self.arriving is not None and self.arriving() <= len(jobs)):
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if job is None:
                return jobs, True
            jobs.append(job)
            size += len(job.texts)
        return jobs, False

    def _predict(self, model: ServedModel, texts: list[str]) -> npt.NDArray[np.float64]:
        try:
            return model.predict(texts)
        finally:
            self.trimmer.maybe()

    async def _run(self, jobs: list[_Job]) -> None:
        live = [j for j in jobs if not j.future.done()]  # a client that went away
        if not live:
            return
        model = self.current()
        if model is None:
            for j in live:
                j.future.set_exception(NotReady("no verified model in service yet"))
            return
        texts = [t for j in live for t in j.texts]
        try:
            probs = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._predict, model, texts
            )
        except Exception as exc:
            logger.exception("scoring a batch of %d messages failed", len(texts))
            for j in live:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        start = 0
        for j in live:
            part = probs[start : start + len(j.texts)]
            start += len(j.texts)
            if not j.future.done():
                j.future.set_result(Scored(model, part))
        if self.on_batch is not None:
            try:
                self.on_batch(model, texts, probs)
            except Exception:  # an observer's failure must not fail the requests it watched
                logger.exception("the batch observer failed")
