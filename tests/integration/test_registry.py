"""The registry with real BERT training: the gate refuses a bad candidate, rollback restores
the previous version for the next prediction, tampered checkpoints are refused, lineage is
exact, incremental retraining warm-starts from production; promotions race on PostgreSQL."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator import registry
from orchestrator.access import create_operator
from orchestrator.cli import app
from orchestrator.context import Context
from orchestrator.settings import load_settings
from store import AnnotationIn, ChatIn, ModelVersion, Store
from tests.conftest import race_promotions

pytestmark = pytest.mark.integration


def _rows(path: Path, n: int, seed: int) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return random.Random(seed).sample(rows, n)


@pytest.fixture
def ctx(tmp_path: Path, airline: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    dev = tmp_path / "dev.csv"
    rows = _rows(airline / "dev.csv", 200, seed=3)
    with dev.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SENTILOOP_EVAL_FILE", str(dev))
    monkeypatch.setenv("SENTILOOP_TRAIN_EPOCHS", "3")
    monkeypatch.setenv("SENTILOOP_TRAIN_MIN_STEPS", "0")  # the recipe these tests were sized for
    context = Context.from_settings(load_settings())
    context.store.init()
    yield context
    context.store.dispose()


def _label(
    ctx: Context, rows: list[dict[str, str]], first_id: int, *, shuffle: bool = False
) -> list[int]:
    """Store chats and annotations as if pulled from Label Studio; return annotation ids."""
    store = ctx.store
    store.add_chats([ChatIn(r["chat_id"], r["text"], {}, None) for r in rows])
    ids = store.chat_ids_by_source([r["chat_id"] for r in rows])
    labels = [r["label"] for r in rows]
    if shuffle:
        random.Random(7).shuffle(labels)
    now = datetime.now(UTC)
    items = [
        AnnotationIn(
            first_id + i, 10_000 + first_id + i, ids[r["chat_id"]], label, "gold", False, now, now
        )
        for i, (r, label) in enumerate(zip(rows, labels, strict=True))
    ]
    store.upsert_annotations(1, items)
    return [a.ls_annotation_id for a in items]


def _quiet(stage: str, done: int, total: int) -> None:
    return None


def test_gate_rollback_tamper_lineage_and_incremental(
    ctx: Context, airline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(airline / "pool.csv", 260, seed=5)
    good_ids = _label(ctx, rows[:200], 1)
    first = registry.retrain(ctx, _quiet)
    assert first["version"] == 1 and first["promoted"] and first["mode"] == "full"
    v1 = ctx.store.version(1)
    assert v1 is not None and v1.status == "production"
    assert sorted(v1.annotation_ids) == sorted(good_ids)  # lineage: exactly these annotations
    assert ctx.store.lineage(1) == sorted(good_ids)
    assert v1.metrics["macro_f1"] > 0.4
    assert 0 <= v1.metrics["ece"] <= 1 and v1.temperature > 0
    assert Path(v1.checkpoint_path + ".card.json").is_file()
    _loads_as_a_hub_model(v1)

    # the same labels again: no second version
    assert "skipped" in registry.retrain(ctx, _quiet)

    # a candidate trained on shuffled labels is refused by the gate
    shuffled = [
        AnnotationIn(a, 10_000 + a, c, lab, "saboteur", False, datetime.now(UTC), datetime.now(UTC))
        for a, c, lab in _shuffled(ctx, good_ids)
    ]
    ctx.store.upsert_annotations(1, shuffled)
    bad = registry.retrain(ctx, _quiet)
    assert bad["version"] == 2 and not bad["promoted"], bad
    assert ctx.store.production().number == 1  # type: ignore[union-attr]
    v2 = ctx.store.version(2)
    assert v2 is not None and v2.status == "candidate" and not v2.gate["passed"]

    monkeypatch.setenv(
        "SENTILOOP_OPERATOR_KEY", create_operator(ctx.settings, ctx.store, "root", "admin")[0]
    )
    runner = CliRunner()
    out = runner.invoke(app, ["models", "show", "2"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert (
        "200 annotations in this run" in text and "gate vs production v1" in text and "FAIL" in text
    )

    # promotion refused without --force; forced with a reason it is audited
    refused = runner.invoke(app, ["models", "promote", "2"])
    assert refused.exit_code == 1 and "fails the gate" in refused.output
    forced = runner.invoke(app, ["models", "promote", "2", "--force", "--reason", "test override"])
    assert forced.exit_code == 0, forced.output
    assert "model v2" in runner.invoke(app, ["predict", "great flight"]).output
    back = runner.invoke(app, ["models", "rollback", "--reason", "v2 is bad"])
    assert back.exit_code == 0 and "v1 is production" in back.output
    assert "model v1" in runner.invoke(app, ["predict", "great flight"]).output  # next prediction
    audit = [(p.action, p.version, p.forced) for p in ctx.store.promotions()]
    assert audit[:2] == [("rollback", 1, False), ("promote", 2, True)]
    diff = runner.invoke(app, ["models", "diff", "1", "2"])
    assert diff.exit_code == 0 and "macro-F1" in diff.output

    # a checkpoint whose bytes changed is refused on load
    weights = Path(v1.checkpoint_path) / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    tampered = runner.invoke(app, ["predict", "great flight"])
    assert tampered.exit_code == 2 and "sha256" in tampered.output.lower()
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))

    # incremental: restore the true labels, add new ones, warm-start from production v1
    ctx.store.upsert_annotations(
        1,
        [
            AnnotationIn(a, 10_000 + a, c, lab, "gold", False, datetime.now(UTC), datetime.now(UTC))
            for a, c, lab in _truth(ctx, rows[:200], good_ids)
        ],
    )
    monkeypatch.setenv("SENTILOOP_RETRAIN_MODE", "incremental")
    monkeypatch.setenv("SENTILOOP_INCREMENTAL_EPOCHS", "2")
    inc_ctx = Context.from_settings(load_settings())
    new_ids = _label(inc_ctx, rows[200:], 1000)
    inc = registry.retrain(inc_ctx, _quiet)
    assert inc["mode"] == "incremental", inc
    v = inc_ctx.store.version(inc["version"])
    assert isinstance(v, ModelVersion) and v.parent == 1
    assert set(new_ids) <= set(v.annotation_ids)
    assert set(inc_ctx.store.lineage(v.number)) == set(good_ids) | set(new_ids)
    inc_ctx.store.dispose()


def _shuffled(ctx: Context, ids: list[int]) -> list[tuple[int, int, str]]:
    examples = {e.annotation_id: e for e in ctx.store.training_examples()}
    labels = [examples[a].label for a in ids]
    random.Random(11).shuffle(labels)
    return [(a, examples[a].chat_id, lab) for a, lab in zip(ids, labels, strict=True)]


def _truth(ctx: Context, rows: list[dict[str, str]], ids: list[int]) -> list[tuple[int, int, str]]:
    chat_ids = ctx.store.chat_ids_by_source([r["chat_id"] for r in rows])
    return [(a, chat_ids[r["chat_id"]], r["label"]) for a, r in zip(ids, rows, strict=True)]


def test_concurrent_promotions_on_postgres(postgres_url: str) -> None:
    store = Store(postgres_url)
    store.init()
    for n in range(1, 9):
        store.add_version(
            ModelVersion(
                number=n,
                base_model="b",
                checkpoint_path=f"/m/v{n}",
                weights_sha256="0" * 64,
                data_fingerprint=f"fp{n}",
            )
        )
    errors = race_promotions(postgres_url, 8, rounds=3)
    assert errors == []
    assert [v.status for v in store.versions()].count("production") == 1
    assert len(store.promotions(limit=100)) == 24
    store.dispose()


def _loads_as_a_hub_model(version: ModelVersion) -> None:
    """The checkpoint directory is a Hugging Face model as it is: plain transformers loads
    it with our label names, and its README.md carries the model card's metadata header."""
    import yaml
    from transformers import pipeline

    from domain import LABELS

    readme = (Path(version.checkpoint_path) / "README.md").read_text()
    assert readme.startswith("---\n")
    meta = yaml.safe_load(readme.split("---\n")[1])
    assert meta["pipeline_tag"] == "text-classification" and meta["license"] == "apache-2.0"
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["language"] == "en" and meta["library_name"] == "transformers"
    (metric, _) = meta["model-index"][0]["results"][0]["metrics"]
    assert metric == {
        "type": "f1",
        "value": round(version.metrics["macro_f1"], 4),
        "name": "macro-F1",
    }
    assert f"T = {version.temperature:.4f}" in readme
    classify = pipeline("text-classification", model=version.checkpoint_path, device="cpu")
    answers = classify(["The crew was wonderful, thank you!", "Lost my bag again. Furious."])
    assert [a["label"] in LABELS for a in answers] == [True, True]
