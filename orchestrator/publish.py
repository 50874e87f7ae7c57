"""A trained model becomes a registered version in one way, for students and teachers alike:
trained, its checkpoint written under a claimed number (orchestrator.checkpoints), evaluated
and calibrated on the evaluation set, then registered together with the end of its claim."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.context import Context, Progress
from orchestrator.evaluation import EvalSet, evaluate_checkpoint
from store import ModelVersion, TrainingExample
from store.checkpoints import register_version

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from training import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """What a version is made of, for its manifest and its registry row."""

    base_model: str
    config: TrainConfig
    fingerprint: str
    examples: Sequence[TrainingExample]  # the human labels it learned (its lineage)
    manifest: dict[str, Any] = field(default_factory=dict)  # more for sentiloop.json
    row: dict[str, Any] = field(default_factory=dict)  # more ModelVersion fields


def train_and_register(
    ctx: Context,
    fit: Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    recipe: Recipe,
    held: EvalSet,
    progress: Progress,
) -> ModelVersion:
    """Run ``fit``, then publish what it trained. The model is dropped before it is
    evaluated (the scorer loads the checkpoint), so two copies never share the memory."""
    from orchestrator.checkpoints import claim
    from training import save_checkpoint

    started = time.monotonic()
    model, tokenizer = fit()
    seconds = time.monotonic() - started
    intent = claim(ctx)  # recorded before anything is written: see orchestrator.checkpoints
    info = save_checkpoint(
        model,
        tokenizer,
        ctx.settings.models_dir,
        intent.name,
        {
            "intent": intent.token,
            "version": intent.number,
            "base_model": recipe.base_model,
            "train_config": recipe.config.to_dict(),
            "data_fingerprint": recipe.fingerprint,
            "n_train": len(recipe.examples),
            **recipe.manifest,
        },
    )
    del model
    version = ModelVersion(
        number=intent.number,
        base_model=recipe.base_model,
        checkpoint_path=str(info.path),
        weights_sha256=info.sha256,
        data_fingerprint=recipe.fingerprint,
        annotation_ids=sorted(e.annotation_id for e in recipe.examples),
        annotation_revisions={str(e.record_id): e.revision for e in recipe.examples},
        n_train=len(recipe.examples),
        train_seconds=round(seconds, 2),
        **recipe.row,
    )
    metrics = evaluate_checkpoint(ctx, version, held, progress, fit_temperature=True)
    version.metrics, version.temperature = metrics, float(metrics.get("temperature", 1.0))
    return register_version(ctx.store, version, intent)
