"""Model versions: (re)training in full or incremental mode, evaluation and calibration, the
promotion gate, promotion and rollback with an audit trail, retention and model cards."""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import random
import shutil
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from orchestrator.context import Context
from orchestrator.errors import StepError
from orchestrator.settings import Settings
from store import (
    ModelVersion,
    Promotion,
    PromotionConflict,
    StoreError,
    TrainingExample,
    parse_file,
)
from store.checkpoints import register_version

if TYPE_CHECKING:
    from training import TrainConfig

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
#: The model's classes (training.LABELS), repeated so this module loads without torch.
LABELS = ("negative", "neutral", "positive")


def actor() -> str:
    """Who acts, for the audit trail: the OS user and host (the scheduler for auto)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# -- evaluation sets ----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    texts: list[str]
    labels: list[str]
    source: str
    held_out: frozenset[int]  # chat ids kept out of training (holdout mode)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.labels + self.texts).encode()).hexdigest()


_FILE_CACHE: dict[str, tuple[list[str], list[str]]] = {}


def _labelled_file(path: Path, setting: str) -> tuple[list[str], list[str]]:
    key = str(path.resolve())
    if key not in _FILE_CACHE:
        rows = [c for c in parse_file(path).chats if c.meta.get("label") in LABELS]
        if not rows:
            raise StepError(f"{setting} {path} has no row with a valid 'label' column")
        _FILE_CACHE[key] = ([c.text for c in rows], [str(c.meta["label"]) for c in rows])
    return _FILE_CACHE[key]


def eval_set(ctx: Context, examples: Sequence[TrainingExample]) -> EvalSet:
    """The fixed evaluation set: ``SENTILOOP_EVAL_FILE``, or else a fifth of the labels chosen
    by a hash of the chat id (so a chat never moves between training and evaluation)."""
    path = ctx.settings.eval_file
    if path is not None:
        texts, labels = _labelled_file(path, "SENTILOOP_EVAL_FILE")
        return EvalSet(texts, labels, f"file:{path.name}", frozenset())
    held = [e for e in examples if hashlib.sha256(str(e.chat_id).encode()).digest()[0] % 5 == 0]
    return EvalSet(
        [e.text for e in held],
        [e.label for e in held],
        "holdout",
        frozenset(e.chat_id for e in held),
    )


def evaluate_checkpoint(
    ctx: Context,
    version: ModelVersion,
    data: EvalSet,
    progress: Progress,
    *,
    fit_temperature: bool = False,
) -> dict[str, Any]:
    """Metrics of a version on a set; with ``fit_temperature`` also its calibration."""
    from training import (
        apply_temperature,
        evaluate,
        expected_calibration_error,
        predicted_labels,
    )
    from training import fit_temperature as fit

    if not data.texts:
        return {"eval_set": data.source, "n": 0}
    raw = ctx.scorer(version).predict_proba(
        data.texts, progress=lambda done, total: progress("evaluate", done, total)
    )
    metrics: dict[str, Any] = dict(evaluate(data.labels, predicted_labels(raw)))
    metrics["eval_set"] = data.source
    metrics["eval_fingerprint"] = data.fingerprint
    temperature = fit(raw, data.labels) if fit_temperature else version.temperature
    metrics["temperature"] = round(temperature, 4)
    metrics["ece_before"] = round(expected_calibration_error(raw, data.labels), 4)
    metrics["ece"] = round(
        expected_calibration_error(apply_temperature(raw, temperature), data.labels), 4
    )
    test_file = ctx.settings.test_file
    if test_file is not None:
        texts, labels = _labelled_file(test_file, "SENTILOOP_TEST_FILE")
        probs = ctx.scorer(version).predict_proba(texts)
        test = dict(evaluate(labels, predicted_labels(probs)))
        test["ece"] = round(
            expected_calibration_error(apply_temperature(probs, temperature), labels), 4
        )
        test["eval_set"] = f"file:{test_file.name}"
        metrics["test"] = test
    return metrics


# -- the gate -----------------------------------------------------------------------------


def gate(
    ctx: Context,
    candidate: ModelVersion,
    production: ModelVersion | None,
    *,
    persist: bool = True,
) -> dict[str, Any]:
    """Pass when macro-F1 is at least production's minus the tolerance and no class's F1
    drops by more than the allowed amount, both on the same evaluation set. Versions measured
    on another set are measured again; ``persist=False`` (read-only commands) keeps those
    figures to itself instead of storing them."""
    settings = ctx.settings
    if production is None:
        return {"passed": True, "reason": "no production version yet"}
    if production.number == candidate.number:
        return {"passed": True, "reason": "is production"}
    cand = candidate.metrics
    prod = production.metrics
    if "macro_f1" not in cand:
        return {"passed": False, "reason": "candidate has no metrics (no evaluation set)"}
    if prod.get("eval_fingerprint") != cand.get("eval_fingerprint"):
        data = eval_set(ctx, ctx.store.training_examples())
        if data.fingerprint != cand.get("eval_fingerprint"):
            cand = evaluate_checkpoint(ctx, candidate, data, _quiet)
            if persist:
                ctx.store.set_metrics(candidate.number, cand)
        prod = evaluate_checkpoint(ctx, production, data, _quiet)
        if persist:
            ctx.store.set_metrics(production.number, prod)
    drops = {
        label: round(
            float(prod["per_class"][label]["f1"]) - float(cand["per_class"][label]["f1"]), 4
        )
        for label in LABELS
    }
    failures = []
    macro_drop = float(prod["macro_f1"]) - float(cand["macro_f1"])
    if macro_drop > settings.gate_tolerance:
        failures.append(f"macro-F1 drops {macro_drop:.3f} > {settings.gate_tolerance}")
    for label, drop in drops.items():
        if drop > settings.gate_max_class_drop:
            failures.append(f"{label} F1 drops {drop:.3f} > {settings.gate_max_class_drop}")
    figures = f"macro-F1 {cand['macro_f1']:.3f} vs v{production.number} {prod['macro_f1']:.3f}"
    return {
        "passed": not failures,
        "reason": ("passed: " + figures) if not failures else "; ".join(failures),
        "production": production.number,
        "candidate_macro_f1": cand["macro_f1"],
        "production_macro_f1": prod["macro_f1"],
        "class_f1_drop": drops,
        "eval_set": cand.get("eval_set"),
    }


def _quiet(stage: str, done: int, total: int) -> None:
    return None


# -- promotion and rollback ---------------------------------------------------------------


def promote(
    ctx: Context, number: int, *, force: bool = False, reason: str = "", who: str | None = None
) -> tuple[Promotion | None, dict[str, Any]]:
    """Promote through the gate; ``force`` overrides a failed gate but needs a reason. The
    promotion happens only if production is still the version the gate compared against."""
    store = ctx.store
    candidate = store.version(number)
    if candidate is None:
        raise StepError(f"no model version {number}")
    production = store.production()
    if production is not None and production.number == number:
        raise StepError(f"v{number} is already production")
    result = gate(ctx, candidate, production)
    if not result["passed"] and not force:
        return None, result
    if force and not reason.strip():
        raise StepError("a forced promotion needs --reason")
    try:
        record = store.promote(
            number,
            actor=who or actor(),
            reason=reason or ("gate passed" if result["passed"] else ""),
            action="promote",
            gate=result,
            forced=force and not result["passed"],
            expected=production.number if production else None,
        )
    except PromotionConflict as exc:
        raise StepError(f"{exc}; production changed while the gate ran: try again") from exc
    return record, result


def rollback(ctx: Context, *, reason: str = "", who: str | None = None) -> Promotion:
    """Make the version below the current one in the production history production again,
    and pause automatic promotion until someone resumes it (the scheduler must not promote
    over a person's decision)."""
    try:
        return ctx.store.rollback(actor=who or actor(), reason=reason or "rollback", pause=True)
    except PromotionConflict as exc:
        raise StepError(f"{exc}: production changed meanwhile, try again") from exc
    except StoreError as exc:
        raise StepError(str(exc)) from exc


def auto_promote(
    ctx: Context, version: ModelVersion, production: ModelVersion | None, result: dict[str, Any]
) -> tuple[bool, str]:
    """The scheduler's promotion after a passed gate: not while paused by a manual rollback,
    and only over the production version the gate compared against. Returns (promoted, why)."""
    store = ctx.store
    if not result["passed"]:
        return False, "gate failed"
    if ctx.settings.promote != "auto":
        return False, "SENTILOOP_PROMOTE=manual"
    paused = store.auto_promotion_paused()
    if paused:
        return False, (
            f"automatic promotion paused by {paused.get('by')} ({paused.get('reason')}): "
            "`sentiloop models resume`"
        )
    try:
        store.promote(
            version.number,
            actor=f"scheduler@{socket.gethostname()}",
            reason="gate passed (auto)",
            action="promote",
            gate=result,
            expected=production.number if production else None,
        )
    except PromotionConflict as exc:
        return False, str(exc)
    return True, "gate passed"


# -- retraining ---------------------------------------------------------------------------


def choose_mode(ctx: Context, production: ModelVersion | None) -> tuple[str, str]:
    """Full or incremental for this cycle, and why. Incremental warm-starts from production;
    every ``SENTILOOP_FULL_EVERY``-th version, and after an incremental candidate failed the
    gate, a full retrain keeps incremental honest."""
    settings = ctx.settings
    if settings.retrain_mode == "full":
        return "full", "SENTILOOP_RETRAIN_MODE=full"
    if production is None:
        return "full", "no production version to start from"
    chain = 0
    current: ModelVersion | None = production
    while current is not None and current.mode == "incremental":
        chain += 1
        current = ctx.store.version(current.parent) if current.parent else None
    if chain + 1 >= settings.full_every:
        return "full", f"{chain} incremental versions in a row (SENTILOOP_FULL_EVERY)"
    latest = ctx.store.versions()[-1]
    if (
        latest.mode == "incremental"
        and latest.status == "candidate"
        and not latest.gate.get("passed", True)
    ):
        return "full", f"incremental v{latest.number} failed the gate"
    return "incremental", f"warm start from v{production.number}"


def replay_sample(
    old: Sequence[TrainingExample], n_new: int, ratio: float, seed: int
) -> list[TrainingExample]:
    """Earlier labels replayed with the new ones, stratified by class, so the warm-started
    model does not forget what it knew."""
    want = min(len(old), round(ratio * n_new))
    if want <= 0:
        return []
    by_label: dict[str, list[TrainingExample]] = defaultdict(list)
    for e in old:
        by_label[e.label].append(e)
    # proportional shares, rounded by largest remainder so they add up to ``want``
    exact = {label: want * len(items) / len(old) for label, items in by_label.items()}
    shares = {label: int(x) for label, x in exact.items()}
    for label in sorted(exact, key=lambda k: exact[k] - shares[k], reverse=True):
        if sum(shares.values()) >= want:
            break
        shares[label] += 1
    rng = random.Random(seed)
    picked = [e for label in sorted(by_label) for e in rng.sample(by_label[label], shares[label])]
    return sorted(picked, key=lambda e: e.chat_id)


def train_configs(settings: Settings) -> tuple[TrainConfig, TrainConfig]:
    """The recipes of a full retrain and of an incremental one, from the settings.

    Only a full retrain gets ``train_min_steps``: its classification head starts from
    random, and 3 epochs over 100 labels are 21 steps, too few to learn the minority
    classes (test macro-F1 0.45 against 0.63 with 100 steps, 3 seeds, benchmarks/results). An
    incremental retrain starts from a trained head and stops early on the evaluation set.
    """
    from training import TrainConfig

    full = TrainConfig(
        epochs=settings.train_epochs,
        min_steps=settings.train_min_steps,
        learning_rate=settings.train_lr,
        batch_size=settings.train_batch_size,
        max_length=settings.max_length,
        seed=settings.seed,
    )
    incremental = replace(
        full,
        epochs=settings.incremental_epochs,
        min_steps=0,
        learning_rate=settings.incremental_lr,
        early_stopping_patience=1,
    )
    return full, incremental


def retrain(ctx: Context, progress: Progress) -> dict[str, Any]:
    """Train a version on the current labels, unless one exists for exactly this data and
    recipe; evaluate, calibrate and register it, then gate, promote and apply retention."""
    from orchestrator.checkpoints import claim, clean_models_dir
    from training import fine_tune, save_checkpoint

    settings, store = ctx.settings, ctx.store
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    removed = clean_models_dir(ctx)  # under this step's lease: no other retrain is running
    examples = store.training_examples()
    data = eval_set(ctx, examples)
    train = [e for e in examples if e.chat_id not in data.held_out]
    if len(train) < settings.min_train_labels:
        return {"skipped": f"{len(train)} labels, need {settings.min_train_labels}"}
    production = store.production()
    mode, why = choose_mode(ctx, production)
    full_config, incremental_config = train_configs(settings)
    if mode == "incremental" and production is not None:
        seen = set(store.lineage(production.number))
        fresh = [
            e for e in train if e.annotation_id not in seen or e.pulled_at > production.created_at
        ]
        if not fresh:
            return {"skipped": f"no new labels since v{production.number}", "mode": mode}
        fresh_ids = {e.annotation_id for e in fresh}
        old = [e for e in train if e.annotation_id not in fresh_ids]
        batch = fresh + replay_sample(old, len(fresh), settings.replay_ratio, settings.seed)
        base, parent_sha = production.checkpoint_path, production.weights_sha256
        config = incremental_config
        ctx.verify(production)
    else:
        batch, base, parent_sha, config = train, settings.base_model, "", full_config
    fingerprint = _fingerprint(mode, base, parent_sha, config.to_dict(), batch)
    existing = store.version_by_fingerprint(fingerprint)
    if existing is not None:
        return {
            "skipped": f"v{existing.number} was trained on these labels",
            "version": existing.number,
        }

    stop_texts, stop_labels = _early_stopping_sample(
        data, settings.early_stopping_sample, settings.seed
    )
    started = time.monotonic()
    model, tokenizer = fine_tune(
        base,
        [e.text for e in batch],
        [e.label for e in batch],
        config,
        device=settings.device,
        progress=lambda done, total: progress("train", done, total),
        eval_texts=stop_texts if mode == "incremental" else (),
        eval_labels=stop_labels if mode == "incremental" else (),
    )
    train_seconds = time.monotonic() - started
    intent = claim(ctx)  # recorded before anything is written: see orchestrator.checkpoints
    number = intent.number
    parent = production.number if production else None
    info = save_checkpoint(
        model,
        tokenizer,
        settings.models_dir,
        intent.name,
        {
            "intent": intent.token,
            "version": number,
            "parent": parent,
            "mode": mode,
            "base": base if mode == "full" else f"v{parent}",
            "base_model": settings.base_model,
            "train_config": config.to_dict(),
            "data_fingerprint": fingerprint,
            "n_train": len(batch),
        },
    )
    del model
    version = ModelVersion(
        number=number,
        parent=parent,
        base_model=settings.base_model,
        checkpoint_path=str(info.path),
        weights_sha256=info.sha256,
        data_fingerprint=fingerprint,
        train_config={**config.to_dict(), "mode_reason": why},
        annotation_ids=sorted(e.annotation_id for e in batch),
        n_train=len(batch),
        train_seconds=round(train_seconds, 2),
        mode=mode,
    )
    metrics = evaluate_checkpoint(ctx, version, data, progress, fit_temperature=True)
    version.metrics, version.temperature = metrics, float(metrics.get("temperature", 1.0))
    version = register_version(store, version, intent)
    result = gate(ctx, version, production)
    store.set_gate(number, result)
    promoted, why = auto_promote(ctx, version, production, result)
    version = store.version(number) or version
    write_model_card(ctx, version)
    deleted = apply_retention(ctx)
    return {
        "version": number,
        "mode": mode,
        "n_train": len(batch),
        "macro_f1": metrics.get("macro_f1"),
        "accuracy": metrics.get("accuracy"),
        "ece": metrics.get("ece"),
        "promoted": promoted,
        "gate": result["reason"] if promoted or not result["passed"] else f"passed, {why}",
        "cleaned": removed + deleted,
    }


def _early_stopping_sample(data: EvalSet, size: int, seed: int) -> tuple[list[str], list[str]]:
    idx = list(range(len(data.texts)))
    if len(idx) > size:
        idx = sorted(random.Random(seed).sample(idx, size))
    return [data.texts[i] for i in idx], [data.labels[i] for i in idx]


def _fingerprint(
    mode: str, base: str, parent_sha: str, config: dict[str, Any], batch: Sequence[TrainingExample]
) -> str:
    payload = json.dumps(
        {
            "mode": mode,
            "base": base if mode == "full" else parent_sha,
            "config": config,
            "labels": [(e.annotation_id, e.chat_id, e.label) for e in batch],
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def apply_retention(ctx: Context) -> list[str]:
    """Keep production, its parent, the rollback target and the newest K candidates on disk;
    delete older checkpoint files but keep their registry rows."""
    store, keep_n = ctx.store, ctx.settings.keep_candidates
    versions = store.versions()
    production = store.production()
    keep: set[int] = set()
    if production is not None:
        keep.add(production.number)
        if production.parent is not None:
            keep.add(production.parent)
        target = store.rollback_target()
        if target is not None:
            keep.add(target)
    keep.update(v.number for v in versions[-keep_n:] if keep_n > 0)
    deleted = []
    for v in versions:
        if v.number in keep or v.checkpoint_deleted:
            continue
        path = Path(v.checkpoint_path)
        if path.exists():
            shutil.rmtree(path)
        store.mark_checkpoint_deleted(v.number)
        deleted.append(path.name)
    if deleted:
        logger.info("retention removed checkpoints %s", ", ".join(deleted))
    return deleted


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


def evaluate_version(ctx: Context, number: int, progress: Progress = _quiet) -> dict[str, Any]:
    """(Re-)evaluate a registered version on the current evaluation set; keep its temperature."""
    version = ctx.store.version(number)
    if version is None:
        raise StepError(f"no model version {number}")
    metrics = evaluate_checkpoint(
        ctx, version, eval_set(ctx, ctx.store.training_examples()), progress
    )
    ctx.store.set_metrics(number, metrics)
    return {"version": number, "macro_f1": metrics.get("macro_f1"), "eval_set": metrics["eval_set"]}


def predict(ctx: Context, texts: Sequence[str]) -> tuple[ModelVersion, npt.NDArray[np.float64]]:
    """Calibrated probabilities from the production version (verified before loading)."""
    from training import apply_temperature

    production = ctx.store.production()
    if production is None:
        raise StepError("no production model yet: run cycles until one is trained")
    raw = ctx.scorer(production).predict_proba(list(texts))
    return production, apply_temperature(raw, production.temperature)
