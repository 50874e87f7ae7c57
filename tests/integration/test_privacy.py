"""Customer data stays private (issue #15), through a real Celery worker and a real Label
Studio: chats full of planted personal data reach annotators masked and never reach the logs;
a customer's chats are erased everywhere on request; only operators whose role allows it
promote or erase, and the audit names them."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import httpx
import pytest

from privacy import is_pseudonym
from tests.integration.conftest import LabelStudioInstance
from tests.integration.loop import Loop, make_loop

pytestmark = pytest.mark.integration

ORDER_PATTERN = r"\bORD-\d{6}\b"
PLANTED = (
    "jane.roe@example.org",
    "+44 20 7946 0958",
    "0612345678",
    "ORD-123456",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "42 Baker Street",
    "track?id=99812",
    "+1 415 555 0199",
)
PII_CHATS = {
    "pii-1": (
        "Hi, it's jane.roe@example.org, ring me on +44 20 7946 0958 or 0612345678 about "
        "order ORD-123456, card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00. "
        "I live at 42 Baker Street and my flight was awful",
        "negative",
    ),
    "pii-2": (
        "Still waiting on https://shop.example.com/track?id=99812 and nobody answers",
        "negative",
    ),
}
CUSTOMER = "cust-42"


def _planted_pool(loop: Loop) -> None:
    """The loop's pool plus two chats of one customer, full of personal data, in the text
    and in metadata columns both shown to annotators (airline) and not (note)."""
    with loop.pool.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row.update(customer_id="", note="")
    for source, (text, label) in PII_CHATS.items():
        rows.append(
            {
                **rows[0],
                "chat_id": source,
                "text": text,
                "label": label,
                "airline": "Virgin America, call +1 415 555 0199",
                "customer_id": CUSTOMER,
                "note": "wrote from jane.roe@example.org",
            }
        )
        loop.gold[source] = label
    with loop.pool.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _leaks(text: str) -> list[str]:
    return [value for value in PLANTED if value in text]


def _task_json(ls: LabelStudioInstance, task_id: int) -> str:
    r = httpx.get(
        f"{ls.url}/api/tasks/{task_id}", headers={"Authorization": f"Token {ls.token}"}, timeout=60
    )
    r.raise_for_status()
    return json.dumps(r.json())


def test_personal_data_is_masked_erased_on_request_and_only_operators_act(
    tmp_path: Path, airline: Path, labelstudio: LabelStudioInstance
) -> None:
    loop = make_loop(
        tmp_path,
        airline,
        labelstudio,
        {
            "SENTILOOP_BATCH_SIZE": "80",  # every chat is pushed in the first cycle
            "SENTILOOP_PII_PATTERNS": json.dumps({"ORDER_ID": ORDER_PATTERN}),
            "SENTILOOP_PROMOTE": "manual",
            "SENTILOOP_GATE_TOLERANCE": "1",  # the retrain without the erased chats passes
            "SENTILOOP_GATE_MAX_CLASS_DROP": "1",
            "SENTILOOP_TRAIN_EPOCHS": "1",  # the test checks where data goes, not the model
            "COLUMNS": "200",  # tables on one line each
        },
        pool_size=30,
    )
    outputs: list[str] = []

    def cli(*args: str, key: str | None = None, code: int = 0) -> str:
        out = loop.cli(*args, env={"SENTILOOP_OPERATOR_KEY": key} if key else None)
        text = out.stdout + out.stderr
        outputs.append(text)
        assert out.returncode == code, f"{args}: {text}{loop.worker_logs()}"
        return " ".join(text.split())

    def operator(name: str, role: str, key: str | None = None) -> str:
        """A new operator's key (printed alone on stdout)."""
        out = loop.cli(
            "operators",
            "create",
            name,
            "--role",
            role,
            env={"SENTILOOP_OPERATOR_KEY": key} if key else None,
        )
        assert out.returncode == 0, out.stderr
        outputs.append(out.stderr)
        return out.stdout.strip()

    try:
        _planted_pool(loop)
        cli("init")
        cli("ingest", str(loop.pool))
        loop.start_worker()
        cli("cycle")  # scores with the base model and pushes every chat

        # 1. what annotators see has none of it; the store keeps the original for the model
        store = loop.store()
        client = loop.client()
        project = client.ensure_project(loop.env["SENTILOOP_PROJECT_TITLE"])
        in_ls = client.tasks_by_chat_id(project)
        assert set(PII_CHATS) <= set(in_ls)
        for source in PII_CHATS:
            (task_id,) = in_ls[source]
            shown = _task_json(labelstudio, task_id)
            assert _leaks(shown) == [], source
            assert "note" not in shown  # a metadata column not in SENTILOOP_SHOWN_META
        assert "<EMAIL>" in shown or "<URL>" in shown
        kept = store.chats_by_id(list(store.chat_ids_by_source(list(PII_CHATS)).values()))
        assert {c.source_id: c.text for c in kept.values()} == {
            s: t for s, (t, _) in PII_CHATS.items()
        }

        assert loop.annotate_open_tasks() >= len(PII_CHATS)
        cli("cycle")  # pulls the labels and trains v1 (not promoted: SENTILOOP_PROMOTE=manual)
        (v1,) = store.versions()
        assert v1.status == "candidate"
        with store.session() as s:
            from sqlmodel import select

            from store import Annotation

            annotators = set(s.exec(select(Annotation.annotator)).all())
        assert annotators and all(a is not None and is_pseudonym(a) for a in annotators)

        # 3. who may act: nobody before the first admin exists, then only the right roles
        refused = cli("models", "promote", "1", code=2)
        assert "create the first admin" in refused
        root = operator("root", "admin")
        viewer, promoter = operator("vic", "viewer", root), operator("pat", "promoter", root)
        assert "vic (viewer) may not" in cli("models", "promote", "1", key=viewer, code=2)
        assert "pat (promoter) may not" in cli(
            "erase", "--customer", CUSTOMER, key=promoter, code=2
        )
        assert store.production() is None
        cli("models", "promote", "1", key=promoter)
        (record,) = store.promotions()
        pat = next(o for o in store.operators() if o.name == "pat")
        assert (record.version, record.actor, record.operator_id) == (1, "pat", pat.id)

        # 2. erasure: gone from Label Studio, the store and the next training set; audited
        erased_ids = set(store.chat_ids_by_source(list(PII_CHATS)).values())
        assert erased_ids <= {e.chat_id for e in store.training_examples()}
        said = cli("erase", "--customer", CUSTOMER, "--reason", "request 7", key=root)
        assert "erasure #1: 2 chats, 2 annotations" in said and "v1" in said
        assert not set(PII_CHATS) & set(client.tasks_by_chat_id(project))
        assert store.chat_ids_by_source(list(PII_CHATS)) == {}
        assert not erased_ids & {e.chat_id for e in store.training_examples()}
        (erasure,) = store.erasures()
        assert (erasure.actor, erasure.reason, erasure.chats, erasure.label_studio_tasks) == (
            "root",
            "request 7",
            2,
            2,
        )
        assert "ERASED DATA" in cli("models", "show", "1")
        again = cli("ingest", str(loop.pool))  # the customer's chats come again: refused
        assert "erased on request (erasure #1)" in again
        assert store.chat_ids_by_source(list(PII_CHATS)) == {}

        # (the next retrain is a full one without them: tests/unit/test_erasure.py)
        listed = cli("models", "list")
        assert re.search(r"v1 +│ production \(learned erased chats\)", listed), listed

        # 1. nothing planted reached a log or an answer of the whole run
        assert _leaks(loop.worker_logs()) == []
        assert _leaks("\n".join(outputs)) == []
        store.dispose()
    finally:
        loop.close()


def test_masking_at_ingest_keeps_the_original_out_of_the_store(
    tmp_path: Path, airline: Path
) -> None:
    loop = make_loop(
        tmp_path,
        airline,
        None,
        {
            "SENTILOOP_PII": "mask-at-ingest",
            "SENTILOOP_PII_PATTERNS": json.dumps({"ORDER_ID": ORDER_PATTERN}),
        },
        pool_size=20,
    )
    _planted_pool(loop)
    assert loop.cli("init").returncode == 0
    out = loop.cli("ingest", str(loop.pool))
    assert out.returncode == 0 and _leaks(out.stdout + out.stderr) == [], out.stderr
    store = loop.store()
    kept = store.chats_by_id(list(store.chat_ids_by_source(list(PII_CHATS)).values()))
    texts = {c.source_id: c.text for c in kept.values()}
    assert set(texts) == set(PII_CHATS) and "<EMAIL>" in texts["pii-1"]
    assert _leaks(json.dumps([[c.text, c.meta] for c in kept.values()])) == []
    store.dispose()
    # not in the database file at all, not even in a page SQLite freed
    assert _leaks((loop.home / "sentiloop.db").read_bytes().decode("utf-8", "replace")) == []
