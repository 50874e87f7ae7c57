"""A real `sentiloop serve` process for tests: a store with versions, a key, the process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from store import ModelVersion, Store
from tests.conftest import REPO_ROOT


@dataclass
class Installation:
    """A store with registered versions (v1 production) and an API key."""

    home: Path
    env: dict[str, str]
    key: str
    store: Store
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO_ROOT,
        )


def make_installation(
    home: Path, checkpoint: Path, versions: int = 3, database_url: str | None = None
) -> Installation:
    """``versions`` checkpoints of one fine-tuned model, each with a shifted classifier bias so
    the versions answer differently; v1 in production, the others candidates."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from serving import new_key
    from training import save_checkpoint

    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SENTILOOP_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "SENTILOOP_SERVE_POLL_SECONDS": "0.5",
    }
    url = database_url or f"sqlite:///{home / 'sentiloop.db'}"
    if database_url:
        env["SENTILOOP_DATABASE_URL"] = database_url
    store = Store(url)
    store.init()
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint))
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    install = Installation(home, env, "", store)
    for n in range(1, versions + 1):
        with torch.no_grad():
            model.classifier.bias += torch.tensor([0.3, 0.0, -0.3]) * (n > 1)
        info = save_checkpoint(model, tokenizer, home / "models", f"v{n:04d}", {})
        install.versions[n] = store.add_version(
            ModelVersion(
                number=n,
                base_model="test",
                checkpoint_path=str(info.path),
                weights_sha256=info.sha256,
                data_fingerprint=uuid.uuid4().hex,
            )
        )
    store.promote(1, actor="test")
    key, key_hash, prefix = new_key()
    store.add_api_key("tests", key_hash, prefix)
    install.key = key
    # the CLI manages keys as an admin
    admin, admin_hash, admin_prefix = new_key("slo_")
    store.add_operator("tests-admin", "admin", admin_hash, admin_prefix, by=None)
    env["SENTILOOP_OPERATOR_KEY"] = admin
    return install


@dataclass
class Served:
    """A running service: its URL, process and log."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    key: str

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
            **kw,
        )

    def sentiment(self, client: httpx.Client, *texts: str) -> httpx.Response:
        messages = [{"id": f"m{i}", "text": t} for i, t in enumerate(texts)]
        return client.post("/v1/sentiment", json={"messages": messages})

    def ready(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/readyz", timeout=10).json()
        return body

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"metric {name} not found")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def serving(
    install: Installation, port: int, extra_env: dict[str, str] | None = None, name: str = "serve"
) -> Iterator[Served]:
    log = install.home / f"{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)],
            env={**install.env, **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    served = Served(f"http://127.0.0.1:{port}", proc, log, install.key)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{served.log_text()}")
        try:
            return httpx.get(f"{served.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 120, "the service to be ready")
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def access_lines(served: Served) -> list[dict[str, Any]]:
    """The JSON access-log lines the service wrote."""
    out = []
    for line in served.log_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out
