"""Helpers of the serving benchmark: the closed-loop load generator, the server processes and
the registry it serves from.

:func:`run_load` runs in worker processes (spawned, so they import nothing heavy: httpx and
the standard library), letting the benchmark process promote and roll back meanwhile without
its GIL slowing the clients. Times are ``time.monotonic()``, one clock for every process on
the machine, so responses can be matched against promotion times.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


class Record(NamedTuple):
    """One request: when it started and ended, its status (0: no response) and version."""

    start: float
    end: float
    status: int
    version: int


# -- load generator --------------------------------------------------------------------------


async def _drive(
    url: str,
    key: str,
    clients: int,
    texts: Sequence[str],
    stop_at: float | None,
    total: int | None,
    offset: int,
) -> list[Record]:
    """``clients`` loops, each sending one single-message request after another.

    Each loop has its own ``httpx.AsyncClient`` holding one keep-alive connection: one
    client shared by all loops (a pool of ``clients`` connections) measured 4.1 ms of CPU
    per request against 1.7 ms, CPU taken from the server on a small machine.
    """
    records: list[Record] = []
    counter = itertools.count()
    headers = {"Authorization": f"Bearer {key}"}

    async def loop() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=60.0, headers=headers) as client:
            while True:
                i = next(counter)
                if (total is not None and i >= total) or (
                    stop_at is not None and time.monotonic() >= stop_at
                ):
                    return
                n = offset + i
                message = {"id": f"m{n}", "text": texts[n % len(texts)], "speaker": "customer"}
                body = {"messages": [{**message, "conversation_id": None}]}
                started = time.monotonic()
                status, version = 0, -1
                try:
                    response = await client.post(url, json=body)
                    status = response.status_code
                    if status == 200:
                        data = response.json()
                        version = int(data["model_version"]) if len(data["results"]) == 1 else -1
                except Exception:  # a failed request is counted, never fatal to the run
                    status = 0
                records.append(Record(started, time.monotonic(), status, version))

    await asyncio.gather(*(loop() for _ in range(clients)))
    return records


def run_load(
    url: str,
    key: str,
    clients: int,
    texts: Sequence[str],
    *,
    stop_at: float | None = None,
    total: int | None = None,
    offset: int = 0,
) -> tuple[list[Record], float]:
    """Drive until ``stop_at`` (monotonic) or ``total`` requests; the records and the CPU
    seconds this process spent (the load generator shares the machine's cores)."""
    cpu = time.process_time()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        records = runner.run(_drive(url, key, clients, texts, stop_at, total, offset))
    return records, time.process_time() - cpu


def split(n: int, parts: int) -> list[int]:
    """``n`` spread over ``parts`` as evenly as possible (zeros dropped)."""
    return [x for x in (n // parts + (i < n % parts) for i in range(parts)) if x]


class Load:
    """Closed-loop load from ``procs`` worker processes (the clients split between them)."""

    def __init__(self, procs: int, key: str, texts: list[str]) -> None:
        self.pool = ProcessPoolExecutor(procs, mp_context=get_context("spawn"))
        self.procs, self.key, self.texts = procs, key, texts

    def start(
        self, url: str, clients: int, *, stop_at: float | None = None, total: int | None = None
    ) -> list[Future[tuple[list[Record], float]]]:
        counts = split(clients, self.procs)
        totals = split(total, len(counts)) if total is not None else [None] * len(counts)
        return [
            self.pool.submit(
                run_load, url, self.key, c, self.texts, stop_at=stop_at, total=t, offset=i << 24
            )
            for i, (c, t) in enumerate(zip(counts, totals, strict=True))
        ]

    @staticmethod
    def collect(futures: list[Future[tuple[list[Record], float]]]) -> tuple[list[Record], float]:
        records: list[Record] = []
        cpu = 0.0
        for f in futures:
            r, c = f.result()
            records += r
            cpu += c
        return sorted(records), cpu

    def run(self, url: str, clients: int, **kw: Any) -> tuple[list[Record], float]:
        return self.collect(self.start(url, clients, **kw))


def stats(records: Sequence[Record], since: float, cpu: float = 0.0) -> dict[str, Any]:
    """req/s, latency percentiles and errors of the requests started at or after ``since``."""
    import numpy as np

    window = [r for r in records if r.start >= since]
    ok = [r for r in window if r.status == 200 and r.version >= 0]
    span = max((r.end for r in window), default=since) - since
    lat = np.array([(r.end - r.start) * 1000 for r in ok]) if ok else np.array([np.nan])
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {
        "requests": len(window),
        "rps": len(ok) / span if span > 0 else 0.0,
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "errors": len(window) - len(ok),
        "client_cores": cpu / span if span > 0 else 0.0,
    }


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process now (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def server(
    name: str, cmd: list[str], env: dict[str, str], logs: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``python ARGS`` as a server subprocess, its output in ``logs``; always stopped (SIGTERM,
    then SIGKILL after 45 s) on the way out."""
    out = (logs / f"{name}.out").open("wb")
    err = (logs / f"{name}.err").open("wb")
    proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()
        err.close()


def wait_ready(
    proc: subprocess.Popen[bytes], url: str, logs: Path, name: str, timeout: float
) -> Any:
    """Poll ``url`` until it answers 200; fail with the server's last error lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            response: httpx.Response | None = httpx.get(url, timeout=5.0)
        except httpx.HTTPError:  # not listening yet: poll again
            response = None
        if response is not None and response.status_code == 200:
            return response.json()
        time.sleep(0.5)
    tail = (logs / f"{name}.err").read_text(errors="replace").strip().splitlines()[-5:]
    state = "exited" if proc.poll() is not None else f"not ready after {timeout:.0f} s"
    raise RuntimeError(f"{name} {state}: " + " | ".join(tail))


def child_env(**extra: str) -> dict[str, str]:
    """This environment plus ``extra``, never a database URL: the benchmark's store is its own."""
    env = {k: v for k, v in os.environ.items() if k != "SENTILOOP_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra)
    return env


# -- the registry ---------------------------------------------------------------------------------


def make_registry(
    db_url: str, models: Path, checkpoint: Path | None, n_versions: int, n_train: int
) -> tuple[Path, str]:
    """A store with ``n_versions`` versions of one fine-tuned model (each with a slightly
    shifted classifier bias, so they answer a bit differently), v1 in production, and an
    API key. Returns v1's checkpoint (what the baseline serves) and the key."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from benchmarks.airline import read_split
    from serving import new_key
    from store import ModelVersion, Store
    from training import DEFAULT_BASE_MODEL, TrainConfig, fine_tune, save_checkpoint

    if checkpoint is None:
        texts, labels = read_split("pool")
        pick = np.random.default_rng(0).choice(len(texts), size=n_train, replace=False)
        model, tokenizer = fine_tune(
            DEFAULT_BASE_MODEL,
            [texts[i] for i in pick],
            [labels[i] for i in pick],
            TrainConfig(epochs=2),
            device="cpu",
        )
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint))
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    store = Store(db_url)
    store.init()
    first: Path | None = None
    head: Any = model.classifier
    bias = head.bias.detach().clone()
    for n in range(1, n_versions + 1):
        with torch.no_grad():
            head.bias.copy_(bias + torch.tensor([0.1, 0.0, -0.1]) * (n - 1))
        info = save_checkpoint(model, tokenizer, models, f"v{n:04d}", {"benchmark": True})
        first = first or info.path
        store.add_version(
            ModelVersion(
                number=n,
                base_model=DEFAULT_BASE_MODEL,
                checkpoint_path=str(info.path),
                weights_sha256=info.sha256,
                data_fingerprint=f"bench-{n}-{os.urandom(8).hex()}",
                n_train=n_train,
            )
        )
    store.promote(1, actor="benchmark")
    key, key_hash, prefix = new_key()
    store.add_api_key("bench", key_hash, prefix)
    store.dispose()
    assert first is not None
    return first, key


def metric_values(text: str, names: Sequence[str]) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page, by name."""
    wanted = set(names)
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            values[name] = float(value)
    return values
