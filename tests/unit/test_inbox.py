"""The inbox takes only complete files, keeps a file through a transient error, explains a
failed one and overwrites nothing (issue #11, item 5)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator.context import Context
from orchestrator.settings import Settings
from orchestrator.steps import ingest_inbox
from store import DatabaseUnavailable, Store

pytestmark = pytest.mark.unit


def _ctx(home: Path, settle: float = 0.0, url: str | None = None) -> Context:
    settings = Settings(home=home, inbox_settle_seconds=settle, database_url=url)
    store = Store(settings.db_url)
    if url is None:
        store.init()
    return Context(settings=settings, store=store)


def _drop(home: Path, name: str, body: str, age: float = 60.0) -> Path:
    path = home / "inbox" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def test_a_file_still_being_written_is_left_for_the_next_tick(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, settle=30)
    growing = _drop(tmp_path, "growing.csv", "chat_id,text\n1,first half of the", age=0)
    hidden = _drop(tmp_path, ".incoming.csv", "chat_id,text\n2,being copied\n")
    partial = _drop(tmp_path, "export.csv.part", "chat_id,text\n3,being copied\n")
    settled = _drop(tmp_path, "settled.csv", "chat_id,text\n4,complete\n")
    totals = ingest_inbox(ctx, _no_progress)
    assert totals["files"] == 1 and totals["inserted"] == 1
    assert growing.exists() and hidden.exists() and partial.exists()
    assert not settled.exists() and (tmp_path / "inbox" / "done" / "settled.csv").exists()
    # the writer finished and the file settled: now it is taken, whole
    with growing.open("a", encoding="utf-8") as fh:
        fh.write(" sentence\n5,second\n")
    os.utime(growing, (time.time() - 60, time.time() - 60))
    assert ingest_inbox(ctx, _no_progress)["inserted"] == 2
    chats = ctx.store.chats_by_id(list(range(1, 10)))
    assert sorted(c.text for c in chats.values()) == [
        "complete",
        "first half of the sentence",
        "second",
    ]


def test_a_transient_error_leaves_the_file_and_fails_the_step(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    path = _drop(tmp_path, "chats.csv", "chat_id,text\n1,hello\n")
    with pytest.raises(DatabaseUnavailable, match="SENTILOOP_DATABASE_URL"):
        ingest_inbox(ctx, _no_progress)
    assert path.exists()
    assert not (tmp_path / "inbox" / "failed").exists()


def test_a_failed_file_gets_a_report_and_nothing_is_overwritten(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    inbox = tmp_path / "inbox"
    _drop(tmp_path, "chats.csv", "chat_id,text\n1,first drop\n,no id\n")
    assert ingest_inbox(ctx, _no_progress)["files"] == 1
    _drop(tmp_path, "chats.csv", "chat_id,text\n2,second drop with the same name\n")
    _drop(tmp_path, "broken.csv", "no,header,here\n1,2,3\n")
    _drop(tmp_path, "empty.jsonl", '{"chat_id": "x"}\n')
    totals = ingest_inbox(ctx, _no_progress)
    assert (totals["files"], totals["failed"]) == (1, 2)
    done = inbox / "done"
    assert (done / "chats.csv").read_text().endswith("first drop\n,no id\n")
    assert (done / "chats-2.csv").read_text().endswith("second drop with the same name\n")
    report = (done / "chats.csv.report.txt").read_text()
    assert "row 2: missing or empty chat id" in report and "first drop" not in report
    failed = inbox / "failed"
    assert "header must name an id column" in (failed / "broken.csv.report.txt").read_text()
    assert "row 1: missing text" in (failed / "empty.jsonl.report.txt").read_text()
    assert sorted(p.name for p in inbox.iterdir()) == ["done", "failed"]
