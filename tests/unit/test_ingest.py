"""Bad input gets a clear reason and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from store import IngestError, Store, parse_file

pytestmark = pytest.mark.unit

GOOD_CSV = "chat_id,text,airline,created_at\n"


def _mixed_csv(path: Path) -> Path:
    rows = [
        b"chat_id,text,airline,created_at\n",
        b"1,my flight was great,United,2015-02-24 11:15:59 -0800\n",  # good
        b",no id here,United,\n",  # missing id
        b"  ,blank id,United,\n",  # empty id
        b"3,,United,\n",  # empty text
        b"4,   \t ,United,\n",  # whitespace-only text
        b"5,caf\xe9 latin-1 bytes,United,\n",  # not UTF-8
        b"6,too,many,fields,here\n",  # wrong shape
        b"7,bad date,United,yesterday-ish\n",  # wrong type (time)
        b'8,"' + b"long " * 3000 + b'",United,\n',  # over-long: kept
        b"9,second good row \xf0\x9f\x98\x80,Delta,\n",  # good (emoji)
        b"1,my flight was great (edited),United,\n",  # repeated id: updates row 1
    ]
    path.write_bytes(b"".join(rows))
    return path


def test_parse_reports_each_bad_row_with_its_reason(tmp_path: Path) -> None:
    result = parse_file(_mixed_csv(tmp_path / "chats.csv"))
    reasons = {e.row: e.reason for e in result.errors}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8]
    assert "missing or empty chat id" in reasons[2]
    assert "missing or empty chat id" in reasons[3]
    assert "empty or whitespace-only text" in reasons[4]
    assert "empty or whitespace-only text" in reasons[5]
    assert "not valid UTF-8" in reasons[6]
    assert "fields" in reasons[7]
    assert "not a date/time" in reasons[8]
    assert [c.source_id for c in result.chats] == ["1", "8", "9", "1"]
    assert result.long_texts == 1
    assert result.chats[0].meta == {"airline": "United", "created_at": "2015-02-24 11:15:59 -0800"}


def test_jsonl_type_errors(tmp_path: Path) -> None:
    lines = [
        json.dumps({"chat_id": 1, "text": "fine"}),
        json.dumps({"chat_id": [1], "text": "list id"}),
        json.dumps({"chat_id": True, "text": "bool id"}),
        json.dumps({"chat_id": "x", "text": 42}),
        json.dumps({"chat_id": "y"}),
        "{not json",
        json.dumps(["an", "array"]),
        json.dumps({"id": "z", "text": "id column alias", "channel": "email"}),
    ]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = parse_file(path)
    assert [c.source_id for c in result.chats] == ["1", "z"]
    assert result.chats[1].meta == {"channel": "email"}
    reasons = [e.reason for e in result.errors]
    assert len(reasons) == 6
    assert "chat id must be a string or an integer, got list" in reasons[0]
    assert "got bool" in reasons[1]
    assert "text must be a string, got int" in reasons[2]
    assert "missing text" in reasons[3]
    assert "not valid JSON" in reasons[4]
    assert "expected a JSON object" in reasons[5]


def test_unsupported_or_headerless_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(IngestError, match="unsupported file type"):
        parse_file(tmp_path / "a.txt")
    (tmp_path / "b.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(IngestError, match="header must name an id column"):
        parse_file(tmp_path / "b.csv")
    with pytest.raises(IngestError, match="not found"):
        parse_file(tmp_path / "missing.csv")


def test_cli_ingest_stores_every_good_row_and_reports_every_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path / "home"))
    path = _mixed_csv(tmp_path / "chats.csv")
    result = CliRunner().invoke(app, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert (
        "3 new, 0 updated, 0 unchanged, 7 rejected, 1 repeated ids (last row kept), 1 over-long"
        in out
    )
    for row in (2, 3, 4, 5, 6, 7, 8):
        assert f"row {row}: " in out
    assert "row 6: column 'text' is not valid UTF-8" in out
    store = Store(f"sqlite:///{tmp_path / 'home' / 'sentiloop.db'}")
    chats = store.chats_by_id(list(range(1, 10)))
    by_source = {c.source_id: c for c in chats.values()}
    assert sorted(by_source) == ["1", "8", "9"]
    assert by_source["1"].text == "my flight was great (edited)"  # a repeated id updates
    assert len(by_source["8"].text) == len("long " * 3000)  # over-long text is kept whole
    again = CliRunner().invoke(app, ["ingest", str(path)])
    assert "0 new, 0 updated, 3 unchanged" in " ".join(again.output.split())
    store.dispose()


def test_cli_ingest_without_any_valid_row_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path / "home"))
    path = tmp_path / "bad.csv"
    path.write_text("chat_id,text\n,\n2,  \n")
    result = CliRunner().invoke(app, ["ingest", str(path)])
    assert result.exit_code == 1
    assert "no valid row" in result.output


def test_bad_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    monkeypatch.setenv("SENTILOOP_BATCH_SIZE", "lots")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "SENTILOOP_BATCH_SIZE" in result.output
