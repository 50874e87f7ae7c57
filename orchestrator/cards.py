"""Model cards: a version's lineage, metrics and gate as JSON and Markdown beside its checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from orchestrator.context import Context
from store import (
    ModelVersion,
)

logger = logging.getLogger(__name__)


def write_model_card(ctx: Context, version: ModelVersion) -> Path:
    """``vNNNN.card.json`` and ``vNNNN.card.md`` beside the checkpoint (outside it, so the
    checkpoint's own manifest and hashes stay as written)."""
    path = Path(version.checkpoint_path)
    card = card_data(ctx, version)
    json_path = path.with_name(path.name + ".card.json")
    json_path.write_text(json.dumps(card, indent=2, default=str))
    path.with_name(path.name + ".card.md").write_text(card_markdown(card))
    return json_path


def card_data(ctx: Context, version: ModelVersion) -> dict[str, Any]:
    lineage = ctx.store.lineage(version.number)
    return {
        "version": version.number,
        "status": version.status,
        "mode": version.mode,
        "parent": version.parent,
        "base_model": version.base_model,
        "created_at": version.created_at,
        "checkpoint": version.checkpoint_path,
        "weights_sha256": version.weights_sha256,
        "checkpoint_deleted": version.checkpoint_deleted,
        "train_config": version.train_config,
        "train_seconds": version.train_seconds,
        "trained_on_annotations": len(version.annotation_ids),
        "lineage_annotations": len(lineage),
        "temperature": version.temperature,
        "metrics": version.metrics,
        "gate": version.gate,
    }


def card_markdown(card: dict[str, Any]) -> str:
    m = card["metrics"]
    lines = [
        f"# sentiloop model v{card['version']}",
        "",
        f"- status: {card['status']}; mode: {card['mode']}; parent: "
        + (f"v{card['parent']}" if card["parent"] else "none"),
        f"- base model: {card['base_model']}",
        f"- created: {card['created_at']}; training time: {card['train_seconds']} s",
        f"- trained on {card['trained_on_annotations']} annotations "
        f"(lineage: {card['lineage_annotations']})",
        f"- weights sha256: `{card['weights_sha256']}`",
        f"- temperature: {card['temperature']}",
        "",
        f"## Metrics on {m.get('eval_set', '-')}",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("macro_f1", "accuracy", "ece_before", "ece"):
        if key in m:
            lines.append(f"| {key} | {m[key]:.4f} |")
    for label, row in (m.get("per_class") or {}).items():
        lines.append(f"| F1 {label} | {row['f1']:.4f} |")
    if "test" in m:
        lines.append(f"| test macro_f1 | {m['test']['macro_f1']:.4f} |")
    lines += ["", f"Gate: {card['gate'].get('reason', '-')}", ""]
    return "\n".join(lines)
