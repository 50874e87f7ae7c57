"""Evaluating versions: the fixed evaluation set, metrics and calibration, the gate against
production, and predictions of the production version."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from domain import LABELS
from orchestrator.context import Context, Progress
from orchestrator.errors import StepError
from store import (
    ModelVersion,
    TrainingExample,
    parse_file,
)

logger = logging.getLogger(__name__)


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


def _labelled_file(ctx: Context, path: Path, setting: str) -> tuple[list[str], list[str]]:
    """Texts and labels of a labelled file, in the form the models learn (masked where the
    store only holds masked text)."""
    masked = ctx.settings.pii == "mask-at-ingest"
    key = f"{path.resolve()}:{masked}"
    if key not in _FILE_CACHE:
        rows = [c for c in parse_file(path).chats if c.meta.get("label") in LABELS]
        if not rows:
            raise StepError(f"{setting} {path} has no row with a valid 'label' column")
        mask = ctx.settings.masker.mask if masked else str
        _FILE_CACHE[key] = ([mask(c.text) for c in rows], [str(c.meta["label"]) for c in rows])
    return _FILE_CACHE[key]


def eval_set(ctx: Context, examples: Sequence[TrainingExample]) -> EvalSet:
    """The fixed evaluation set: ``SENTILOOP_EVAL_FILE``, or else a fifth of the labels chosen
    by a hash of the chat id (so a chat never moves between training and evaluation)."""
    path = ctx.settings.eval_file
    if path is not None:
        texts, labels = _labelled_file(ctx, path, "SENTILOOP_EVAL_FILE")
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
        texts, labels = _labelled_file(ctx, test_file, "SENTILOOP_TEST_FILE")
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
