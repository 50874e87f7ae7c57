"""Hostile files as users have them: every good row is stored, every bad one reported by its
number and reason, no traceback and no chat text in any message (issue #11, items 1-4)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from store import ChatIn, Store, ingest_file, iter_file
from store.ingest import MAX_ID_CHARS

pytestmark = pytest.mark.unit


def _texts(store: Store) -> dict[str, str]:
    chats = store.chats_by_id(list(range(1, 1000)))
    return {c.source_id: c.text for c in chats.values()}


def test_a_csv_field_longer_than_the_csv_modules_limit_is_stored_whole(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Item 1: Python's csv module refuses fields over 131,072 characters by default."""
    long_text = "delayed again " * 20_000  # 280,000 characters
    path = tmp_path / "long.csv"
    path.write_text(f'chat_id,text\n1,"{long_text}"\n2,short one\n', encoding="utf-8")
    report = ingest_file(sqlite_store, path)
    assert (report.inserted, report.n_rejected, report.long_texts) == (2, 0, 1)
    assert _texts(sqlite_store) == {"1": long_text, "2": "short one"}


def test_a_lone_surrogate_escape_rejects_its_row_and_keeps_the_rest(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Item 2: json.loads turns "\\ud800" into a str that no database can store."""
    path = tmp_path / "chats.jsonl"
    path.write_text(
        '{"chat_id": "a", "text": "half an emoji \\ud83d"}\n'
        '{"chat_id": "b", "text": "fine", "agent": {"name": "\\udc00"}}\n'
        '{"chat_id": "c", "text": "a real emoji \\ud83d\\ude00"}\n',
        encoding="utf-8",
    )
    report = ingest_file(sqlite_store, path)
    assert report.rejected == [
        (1, "column 'text' is not valid Unicode (an unpaired surrogate escape)"),
        (2, "column 'agent' is not valid Unicode (an unpaired surrogate escape)"),
    ]
    assert _texts(sqlite_store) == {"c": "a real emoji \U0001f600"}


def test_control_characters_are_removed_and_a_text_of_only_them_is_rejected(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Item 3: a text of two NULs became a chat; NUL also makes PostgreSQL refuse the file."""
    path = tmp_path / "chats.csv"
    path.write_bytes(
        b"chat_id,text,channel\n"
        b"1,\x00\x00,web\n"
        b"2,where is my \x00bag\x1b[31m?\tnow,we\x00b\n"
        b"3\x07,bell in the id,web\n"
    )
    report = ingest_file(sqlite_store, path)
    assert report.rejected == [
        (1, "empty or whitespace-only text"),
        (3, "chat id contains control characters"),
    ]
    assert report.cleaned == 1
    chats = sqlite_store.chats_by_id([1])
    assert chats[1].text == "where is my bag[31m?\tnow"
    assert chats[1].meta == {"channel": "web"}


def test_an_over_long_id_is_rejected_with_its_reason(sqlite_store: Store, tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    rows = [{"chat_id": "x" * (MAX_ID_CHARS + 1), "text": "long id"}, {"id": 7, "text": "ok"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = ingest_file(sqlite_store, path)
    assert report.rejected == [(1, f"chat id is {MAX_ID_CHARS + 1} characters; the limit is 255")]
    assert _texts(sqlite_store) == {"7": "ok"}


def test_jsonl_is_split_at_newlines_only(sqlite_store: Store, tmp_path: Path) -> None:
    """Item 3: str.splitlines() also split inside JSON strings at U+2028, U+2029, U+0085."""
    text = "first line\u2028second\u2029third\x85fourth\rfifth"
    path = tmp_path / "chats.jsonl"
    path.write_text(
        json.dumps({"chat_id": "s", "text": text}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    report = ingest_file(sqlite_store, path)
    assert (report.rows, report.inserted, report.n_rejected) == (1, 1, 0)
    assert _texts(sqlite_store) == {"s": text.replace("\x85", "")}  # NEL is a C1 control


def test_ingest_streams_the_file_instead_of_reading_it_whole(tmp_path: Path) -> None:
    """Item 4: the first records come out while the writer is still writing (a pipe)."""
    fifo = tmp_path / "stream.csv"
    os.mkfifo(fifo)
    release = threading.Event()

    def writer() -> None:
        with fifo.open("w", encoding="utf-8") as fh:
            fh.write("chat_id,text\n1,first\n2,second\n")
            fh.flush()
            release.wait(timeout=30)
            fh.write("3,third\n")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        records = iter_file(fifo)
        first = next(records)
        assert isinstance(first, ChatIn) and first.text == "first"
        assert not release.is_set()  # the file is not complete yet
    finally:
        release.set()
        thread.join()
    assert [r.text for r in records if isinstance(r, ChatIn)] == ["second", "third"]


def test_rows_the_database_refuses_are_reported_and_the_others_stored(sqlite_store: Store) -> None:
    """Rows that pass validation but not the database (here: bypassing validation) cost only
    themselves, and the reason shows no chat text."""
    chats = [
        ChatIn("1", "fine", {}, None, row=1),
        ChatIn("2", "secret \ud800 customer words", {}, None, row=2),
        ChatIn("3", "also fine", {}, None, row=3),
    ]
    counts = sqlite_store.add_chats(chats)
    assert counts.inserted == 2
    assert [row for row, _ in counts.refused] == [2]
    assert "customer" not in counts.refused[0][1]
    assert _texts(sqlite_store) == {"1": "fine", "3": "also fine"}


def test_cli_says_one_line_per_problem_and_never_shows_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path / "home"))
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(
        b'{"chat_id": "1", "text": "my bag \\ud800 is lost"}\n'
        b'{"chat_id": "2", "text": "\\u0000\\u0000"}\n'
        b'{"chat_id": "3", "text": NaN}\n'
        b"[1, 2]\n" + b"[" * 100_000 + b"\n"
        b'{"chat_id": "4", "text": "thanks \\u2028 so much"}\n'
    )
    result = CliRunner().invoke(app, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "my bag" not in result.output
    out = " ".join(result.output.split())
    assert "1 new, 0 updated, 0 unchanged, 5 rejected" in out
    for row in range(1, 6):
        assert f"row {row}: " in out
