"""The demo's last act: the production version serves a chat platform, and a rollback and a
promotion made during live traffic switch it without a failed request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.errors import StepError
from orchestrator.settings import REPO_ROOT, Settings

#: Made-up conversations (no customer data): one calm, one that turns angry, one question.
CONVERSATIONS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "seat-change",
        (
            ("customer", "Hi! Can I still change my seat on tomorrow's flight to Denver?"),
            ("agent", "Of course, I have moved you to 14A."),
            ("customer", "Perfect, thank you so much for the quick help!"),
        ),
    ),
    (
        "lost-bag",
        (
            ("customer", "Hello, my bag did not arrive in Boston, can you check where it is?"),
            ("agent", "I'm sorry to hear that, let me look into it."),
            ("customer", "It has been two hours and nobody at the desk knows anything."),
            ("customer", "This is ridiculous. Worst service ever, I want a refund NOW."),
        ),
    ),
    (
        "question",
        (("customer", "What is the baggage allowance for a flight to London?"),),
    ),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_service_demo(console: Console, settings: Settings, store: Any) -> None:
    """Start `sentiloop serve` on the demo's store, talk to it, switch versions under load."""
    from serving import new_key

    if store.production() is None:
        console.print("no production version: the service part of the demo is skipped")
        return
    key, key_hash, prefix = new_key()
    store.add_api_key(f"demo-{prefix}", key_hash, prefix)
    port = _free_port()
    log = settings.home_dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)],
            env={**os.environ, "SENTILOOP_SERVE_POLL_SECONDS": "0.5"},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with console.status("starting the sentiment service (sentiloop serve)"):
            _wait_ready(proc, url, log)
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            console.print(f"\nsentiment service up at {url} (log {log})")
            _conversations(console, client)
            _switch_under_load(console, client, store)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StepError(f"sentiloop serve exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise StepError(f"sentiloop serve was not ready within 180 s; see {log}")


def _conversations(console: Console, client: httpx.Client) -> None:
    table = Table(
        "conversation",
        "speaker",
        "message",
        "sentiment",
        "score",
        "route",
        "why",
        "model",
        title="live conversations through POST /v1/route (one request per turn)",
    )
    for conversation, turns in CONVERSATIONS:
        for i, (speaker, text) in enumerate(turns):
            r = client.post(
                "/v1/route",
                json={
                    "conversation_id": conversation,
                    "messages": [{"id": f"{conversation}-{i}", "text": text, "speaker": speaker}],
                },
            )
            r.raise_for_status()
            answer = r.json()
            result = answer["results"][0]
            table.add_row(
                conversation if i == 0 else "",
                speaker,
                escape(text if len(text) <= 48 else text[:47] + "…"),
                result["label"],
                f"{result['score']:.2f}",
                "[bold red]escalate[/]" if answer["decision"] == "escalate" else "normal",
                escape(answer["reason"]) if speaker == "customer" else "agent turn: not counted",
                f"v{answer['model_version']}",
            )
    console.print(table)


def _switch_under_load(console: Console, client: httpx.Client, store: Any) -> None:
    """Roll back and promote again while a client keeps asking; count what it saw."""
    history = store.production_history()
    if len(history) < 2:
        console.print("one production version so far: the switch under load is skipped")
        return
    newest, previous = history[-1], history[-2]
    stop = threading.Event()
    seen: list[int] = []
    failed: list[str] = []

    def traffic() -> None:
        body = {"messages": [{"id": "load", "text": CONVERSATIONS[1][1][3][1]}]}
        while not stop.is_set():
            try:
                r = client.post("/v1/sentiment", json=body)
            except httpx.HTTPError as exc:
                failed.append(type(exc).__name__)
                continue
            if r.status_code == 200:
                seen.append(int(r.json()["model_version"]))
            else:
                failed.append(str(r.status_code))

    def until_serving(version: int) -> float:
        started = time.monotonic()
        while time.monotonic() - started < 60:
            if seen and seen[-1] == version:
                break
            time.sleep(0.05)
        return time.monotonic() - started

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        store.rollback(actor="demo", reason="demo: rollback during live traffic", pause=False)
        back = until_serving(previous)
        store.promote(
            newest, actor="demo", reason="demo: promotion during live traffic", expected=previous
        )
        forward = until_serving(newest)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    order = [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]]
    console.print(
        f"during live traffic: rollback v{newest} -> v{previous} served after {back:.1f} s, "
        f"promotion v{previous} -> v{newest} after {forward:.1f} s; {len(seen)} requests, "
        f"{len(failed)} failed; versions answering in order: "
        + " -> ".join(f"v{v}" for v in order),
        soft_wrap=True,
    )
