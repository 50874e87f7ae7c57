"""The sentiment service as the chat platform meets it: a real `sentiloop serve` process, real
HTTP, real checkpoints, a real store (SQLite; PostgreSQL for several processes)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from domain import LABELS
from serving import RoutingPolicy, Turn, decide
from tests.integration.conftest import free_port
from tests.integration.serve import (
    Installation,
    Served,
    access_lines,
    make_installation,
    serving,
    wait_until,
)

if TYPE_CHECKING:
    from training import CheckpointInfo

pytestmark = pytest.mark.integration

ANGRY = "This is the third time my flight is cancelled and nobody answers. Worst airline ever."
CALM = "Thanks, that answers my question about the baggage allowance."
SECRET = "my card number is 4111 1111 1111 1111 and I am furious"


@pytest.fixture
def install(tmp_path: Path, tuned_checkpoint: CheckpointInfo) -> Installation:
    return make_installation(tmp_path / "home", tuned_checkpoint.path)


@pytest.fixture
def served(install: Installation) -> Iterator[Served]:
    with serving(install, free_port()) as s:
        yield s


def test_classify_and_route(served: Served) -> None:
    with served.client() as c:
        r = c.post(
            "/v1/sentiment",
            json={
                "messages": [
                    {"id": "a", "text": ANGRY, "conversation_id": "c1", "speaker": "customer"},
                    {"id": "b", "text": CALM},
                    {"id": "c", "text": "Sorry for the wait!", "speaker": "agent"},
                ]
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == 1
        assert [m["id"] for m in body["results"]] == ["a", "b", "c"]
        for m in body["results"]:
            assert m["label"] in LABELS
            assert set(m["probabilities"]) == set(LABELS)
            assert sum(m["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
            p = m["probabilities"]
            assert m["score"] == pytest.approx(p["positive"] + 0.5 * p["neutral"], abs=1e-5)
            assert max(p, key=p.__getitem__) == m["label"]
            assert m["model_version"] == 1
        assert body["results"][0]["conversation_id"] == "c1"

        # the conversation goes on: customer turns count, the agent's does not
        turns = [body["results"][0]]
        for i, (speaker, text) in enumerate(
            [("agent", "We are sorry, let me check."), ("customer", ANGRY), ("customer", ANGRY)]
        ):
            r = c.post(
                "/v1/route",
                json={
                    "conversation_id": "c1",
                    "messages": [{"id": f"t{i}", "text": text, "speaker": speaker}],
                },
            )
            assert r.status_code == 200, r.text
            route = r.json()
            if speaker == "customer":
                turns.append(route["results"][0])
            expected = decide(
                [Turn(t["id"], t["score"], t["probabilities"]["negative"], 0) for t in turns],
                RoutingPolicy(),
            )
            assert (route["decision"], route["customer_turns"], route["reason"]) == (
                expected.decision,
                expected.turns,
                expected.reason,
            ), route
            assert route["model_version"] == 1
        last = (route["decision"], route["customer_turns"], route["reason"])

        # a message id seen before is not counted again (a client retrying), even with another
        # text; with no new turn the decision is made on what was seen
        again = c.post(
            "/v1/route",
            json={"conversation_id": "c1", "messages": [{"id": "t2", "text": CALM}]},
        ).json()
        assert (again["decision"], again["customer_turns"], again["reason"]) == last
        empty = c.post("/v1/route", json={"conversation_id": "c1"}).json()
        assert (empty["decision"], empty["customer_turns"], empty["reason"]) == last
        assert empty["results"] == []
        unknown = c.post("/v1/route", json={"conversation_id": "never-seen"}).json()
        assert (unknown["decision"], unknown["customer_turns"]) == ("normal", 0)

    lines = access_lines(served)
    assert lines and all(line["key"] == "tests" for line in lines)
    assert ANGRY not in served.log_text() and "baggage" not in served.log_text()


def test_keys_limits_and_bad_requests_get_clear_4xx(install: Installation, served: Served) -> None:
    one = {"messages": [{"id": "x", "text": SECRET}]}
    assert httpx.post(f"{served.url}/v1/sentiment", json=one).status_code == 401
    r = httpx.post(f"{served.url}/v1/route", json={"conversation_id": "c"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{served.url}/v1/sentiment", json=one, headers={"X-API-Key": "slk_nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]

    cases: list[tuple[str, dict[str, object], int, str]] = [
        ("not json", {"content": b"{not json", "headers": {"content-type": "application/json"}},
         422, "invalid request"),
        ("form body", {"content": b"a=1"}, 422, "Content-Type: application/json"),
        ("no messages", {"json": {"messages": []}}, 422, "invalid request"),
        ("no text", {"json": {"messages": [{"id": "x"}]}}, 422, "invalid request"),
        ("text not a string", {"json": {"messages": [{"id": "x", "text": 5}]}}, 422, "invalid"),
        ("id not a string", {"json": {"messages": [{"id": 5, "text": SECRET}]}}, 422, "invalid"),
        ("blank text", {"json": {"messages": [{"id": "x", "text": "  \n"}]}}, 422, "invalid"),
        ("bad speaker", {"json": {"messages": [{"id": "x", "text": SECRET, "speaker": "bot"}]}},
         422, "invalid"),
        ("bad time", {"json": {"messages": [{"id": "x", "text": SECRET, "sent_at": "soon"}]}},
         422, "invalid"),
        ("list body", {"json": [1, 2]}, 422, "invalid"),
        ("too many", {"json": {"messages": [{"id": str(i), "text": "hi"} for i in range(257)]}},
         422, "SENTILOOP_SERVE_MAX_MESSAGES"),
        ("too long", {"json": {"messages": [{"id": "x", "text": "a" * 5001}]}}, 422,
         "SENTILOOP_SERVE_MAX_TEXT_CHARS"),
        ("too big", {"json": {"messages": [{"id": "x", "text": SECRET * 30_000}]}}, 413,
         "SENTILOOP_SERVE_MAX_BODY_BYTES"),
    ]  # fmt: skip
    with served.client() as c:
        for name, kw, status, says in cases:
            r = c.post("/v1/sentiment", **kw)  # type: ignore[arg-type]
            assert r.status_code == status, (name, r.status_code, r.text)
            assert says in r.text, (name, r.text)
            assert "4111" not in r.text, name  # errors never echo the message
        r = c.post("/v1/route", json={"conversation_id": "c", "messages": [{"id": "x"}]})
        assert r.status_code == 422
        r = c.post(
            "/v1/route",
            json={
                "conversation_id": "c",
                "messages": [{"id": "x", "text": SECRET, "conversation_id": "other"}],
            },
        )
        assert r.status_code == 422 and "conversation_id" in r.json()["error"]
        assert c.get("/v1/sentiment").status_code == 405
        assert c.post("/v1/nothing", json={}).status_code == 404
        assert c.post("/v1/sentiment", json=one).status_code == 200

    # a revoked key stops working within a poll of the registry
    assert install.cli("keys", "revoke", "tests").returncode == 0
    wait_until(
        lambda: (
            httpx.post(
                f"{served.url}/v1/sentiment", json=one, headers={"X-API-Key": install.key}
            ).status_code
            == 401
        ),
        10,
        "the revoked key to be refused",
    )
    assert "4111" not in served.log_text()
    assert served.metric('sentiloop_request_errors_total{route="/v1/sentiment"}') >= len(cases)


def _versions_seen(
    served: Served, stop: threading.Event, seen: list[int], failures: list[str]
) -> None:
    with served.client() as c:
        while not stop.is_set():
            try:
                r = served.sentiment(c, ANGRY, CALM)
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
                continue
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text}")
                continue
            body = r.json()
            assert {m["model_version"] for m in body["results"]} == {body["model_version"]}
            seen.append(body["model_version"])


def test_promotions_and_rollbacks_switch_versions_with_no_failed_request(
    install: Installation, served: Served
) -> None:
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []
    clients = [
        threading.Thread(target=_versions_seen, args=(served, stop, seen, failures))
        for _ in range(3)
    ]
    for t in clients:
        t.start()
    try:
        steps: list[tuple[str, int]] = [("promote", 2), ("promote", 3), ("rollback", 2)]
        steps.append(("rollback", 1))
        for action, expect in steps:
            if action == "promote":
                install.store.promote(expect, actor="test", forced=True)
            else:
                install.store.rollback(actor="test")
            mark = len(seen)
            wait_until(lambda e=expect, m=mark: seen[m:].count(e) >= 3, 20, f"v{expect} in service")
            assert served.ready()["model_version"] == expect
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert failures == []
    # versions follow the registry's order: each switch happens once, no flapping back
    changes = [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]]
    assert changes == [1, 2, 3, 2, 1]
    assert served.metric("sentiloop_model_reloads_total") >= 5
    assert served.metric("sentiloop_model_version") == 1


def test_a_tampered_checkpoint_is_refused_and_the_old_version_keeps_serving(
    install: Installation, served: Served
) -> None:
    weights = Path(install.versions[3].checkpoint_path) / "model.safetensors"
    with weights.open("r+b") as fh:  # flip bytes inside the weights, keep the size
        fh.seek(weights.stat().st_size // 2)
        chunk = fh.read(16)
        fh.seek(weights.stat().st_size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    install.store.promote(3, actor="test", forced=True, reason="forced past the gate")
    wait_until(lambda: served.ready().get("reload_error") is not None, 20, "a reload error")
    ready = served.ready()
    assert ready["ready"] is True and ready["model_version"] == 1
    assert ready["production_version"] == 3
    assert ready["reload_error"]["version"] == 3
    assert "sha256" in ready["reload_error"]["reason"]
    assert served.metric("sentiloop_model_reload_failures_total") >= 1
    assert served.metric("sentiloop_model_version") == 1
    assert served.metric("sentiloop_model_target_version") == 3
    with served.client() as c:
        r = served.sentiment(c, CALM)
        assert r.status_code == 200 and r.json()["model_version"] == 1
    # a good version promoted next is served again
    install.store.promote(2, actor="test", forced=True)
    wait_until(lambda: served.ready()["model_version"] == 2, 20, "v2 in service")
    assert served.ready()["reload_error"] is None


def test_graceful_shutdown_finishes_in_flight_requests(install: Installation) -> None:
    with serving(install, free_port()) as served:
        results: list[int] = []

        def big() -> None:
            with served.client() as c:
                texts = [f"{ANGRY} ({i})" for i in range(256)]
                results.append(served.sentiment(c, *texts).status_code)

        threads = [threading.Thread(target=big) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        served.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        # uvicorn re-raises the signal once it has shut down: the conventional exit status
        assert served.proc.wait(timeout=60) == -signal.SIGTERM
    assert results == [200, 200, 200, 200]
    assert "Traceback" not in served.log_text()


def test_shadow_scores_the_waiting_candidate_and_feeds_the_pool(install: Installation) -> None:
    extra = {"SENTILOOP_SERVE_SHADOW_SHARE": "1", "SENTILOOP_SERVE_FEED_POOL": "true"}
    with serving(install, free_port(), extra) as served, served.client() as c:
        for i in range(10):
            r = c.post(
                "/v1/sentiment",
                json={
                    "messages": [
                        {"id": f"u{i}", "text": f"{ANGRY} #{i}", "conversation_id": "k"},
                        {"id": f"a{i}", "text": "We are on it", "speaker": "agent"},
                    ]
                },
            )
            assert r.status_code == 200
        wait_until(
            lambda: served.metric("sentiloop_shadow_messages_total") >= 20, 20, "shadow scoring"
        )
    # stopping flushed the counts and the pool buffer
    (stat,) = install.store.shadow_stats(3)
    assert (stat.production, stat.messages) == (1, 20)
    assert 0 <= stat.agreed <= 20 and stat.production_escalated <= 20
    shown = install.cli("models", "show", "3")
    assert "shadow vs v1" in shown.stdout and "20 live messages" in shown.stdout, shown.stdout
    ids = install.store.chat_ids_by_source([f"live:k:u{i}" for i in range(10)])
    assert len(ids) == 10
    assert install.store.chats_by_id([ids["live:k:u3"]])[ids["live:k:u3"]].text == f"{ANGRY} #3"
    assert not install.store.chat_ids_by_source(["live:k:a0", "live:a0"])  # agents' turns


def test_two_services_on_postgres_converge_after_a_promotion(
    tmp_path: Path, tuned_checkpoint: CheckpointInfo, postgres_url: str
) -> None:
    install = make_installation(tmp_path / "home", tuned_checkpoint.path, 2, postgres_url)
    slow_poll = {"SENTILOOP_SERVE_POLL_SECONDS": "30"}  # only NOTIFY can make them fast
    with (
        serving(install, free_port(), slow_poll, name="a") as a,
        serving(install, free_port(), slow_poll, name="b") as b,
    ):
        assert a.ready()["model_version"] == b.ready()["model_version"] == 1
        started = time.monotonic()
        install.store.promote(2, actor="test", forced=True)
        for s in (a, b):
            wait_until(lambda s=s: s.ready()["model_version"] == 2, 20, "v2 in both services")
        assert time.monotonic() - started < 20
        with a.client() as ca, b.client() as cb:
            assert a.sentiment(ca, CALM).json()["model_version"] == 2
            assert b.sentiment(cb, CALM).json()["model_version"] == 2
    install.store.dispose()
