"""Teacher -> student distillation in the retrain step (``SENTILOOP_TEACHER_MODEL``).

The teacher (a larger model) is trained on the human labels and registered as a version of
its own with status ``teacher``: never served, but verified, evaluated and calibrated like
any other, so the student's lineage can name it. Its calibrated opinions of the unlabelled
pool are stored as its predictions, a page at a time, so a retrain that dies while the
teacher scores resumes where it stopped, and the selection step can use them
(``SENTILOOP_SELECT_WITH=teacher``). The student (the base model, the one that serves) then
learns the human labels plus the teacher's soft labels (``training.distillation_set``).

Self-training (``SENTILOOP_SELF_TRAINING``, issue #17) is the same with production as the
teacher: no model is trained or run for it, since the score step stored production's
calibrated opinion of every unlabelled chat; a full retrain learns the surest of them per class
(``training.self_training_set``) as pseudo-labels, recorded with the version (counts and
thresholds), never as annotations.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.context import Context, Progress
from orchestrator.errors import StepError
from orchestrator.evaluation import EvalSet
from orchestrator.publish import Recipe, train_and_register
from orchestrator.step_score import write_scores
from store import ModelVersion, TrainingExample
from store.models import TEACHER

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from training import PseudoLabels, TrainConfig, TrainingSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distillation:
    """What the student learns: the training set, its teacher, and the pool chats in it."""

    data: TrainingSet
    teacher: ModelVersion
    pool_chat_ids: list[int]
    pool_scoring_seconds: float
    pseudo: PseudoLabels | None = None  # self-training: what it took, per class

    def fingerprint_extra(self) -> dict[str, object]:
        pool = hashlib.sha256(",".join(map(str, self.pool_chat_ids)).encode()).hexdigest()
        return {"teacher": self.teacher.weights_sha256, "pool": pool}

    def record(self) -> dict[str, object]:
        """What the version's manifest and registry row say about it."""
        from training import SOFT_WEIGHT

        common = {
            "teacher": self.teacher.number,
            "soft_labels": len(self.pool_chat_ids),
            "soft_weight": SOFT_WEIGHT,
            "teacher_temperature": self.teacher.temperature,
        }
        if self.pseudo is not None:
            return {"self_training": True, **common, **self.pseudo.record()}
        return {**common, "pool_scoring_seconds": round(self.pool_scoring_seconds, 2)}


def distil(
    ctx: Context,
    train: list[TrainingExample],
    data: EvalSet,
    config: TrainConfig,
    fingerprint: str,
    progress: Progress,
) -> Distillation:
    """The teacher for exactly these labels (trained now, or the one trained before), its
    soft labels on every unlabelled chat, and the student's training set."""
    from training import distillation_set

    teacher = _teacher(ctx, train, data, config, fingerprint, progress)
    started = time.monotonic()
    _score_pool(ctx, teacher, progress)
    seconds = time.monotonic() - started
    ids, texts, probs = _opinions(ctx, teacher)
    training_set = distillation_set(
        [e.text for e in train], [e.label for e in train], texts, probs, held_out=data.texts
    )
    kept = [ids[i] for i in training_set.pool_rows]
    logger.info(
        "distilling from teacher v%d: %d human labels, %d soft labels",
        teacher.number,
        training_set.n_human,
        len(kept),
    )
    return Distillation(training_set, teacher, kept, seconds)


def self_train(
    ctx: Context, production: ModelVersion, train: list[TrainingExample], data: EvalSet
) -> Distillation:
    """Production's surest stored opinions of the unlabelled chats, per class, as
    pseudo-labels beside the human labels (none of the evaluation set's texts)."""
    from training import self_training_set

    settings = ctx.settings
    ids, texts, probs = _opinions(ctx, production)
    training_set, pseudo = self_training_set(
        [e.text for e in train],
        [e.label for e in train],
        texts,
        probs,
        min_confidence=settings.self_training_min_confidence,
        per_human=settings.self_training_per_human,
        held_out=data.texts,
    )
    kept = [ids[i] for i in training_set.pool_rows]
    logger.info(
        "self-training on v%d's opinions: %d human labels, pseudo-labels %s",
        production.number,
        training_set.n_human,
        pseudo.counts,
    )
    return Distillation(training_set, production, kept, 0.0, pseudo)


def _opinions(ctx: Context, version: ModelVersion) -> tuple[list[int], list[str], Any]:
    """A version's stored opinions of the unlabelled chats: ids, texts, probabilities."""
    pool = ctx.store.candidates(version.number, None)  # scored, and in no label task
    ids = [int(c) for c in pool.chat_ids]
    chats = ctx.store.chats_by_id(ids)
    rows = {int(c): i for i, c in enumerate(pool.chat_ids)}
    ids = [c for c in ids if c in chats]  # an erasure may have removed one since
    return ids, [chats[c].text for c in ids], pool.probs[[rows[c] for c in ids]]


def _teacher(
    ctx: Context,
    train: list[TrainingExample],
    data: EvalSet,
    config: TrainConfig,
    fingerprint: str,
    progress: Progress,
) -> ModelVersion:
    """The registered teacher for this fingerprint, or a new one trained on ``train``."""
    from training import ModelLoadError, fine_tune

    settings, store = ctx.settings, ctx.store
    while (existing := store.version_by_fingerprint(fingerprint)) is not None:
        if not existing.checkpoint_deleted:
            ctx.verify(existing)
            logger.info("teacher v%d was trained on these labels: reused", existing.number)
            return existing
        # retention deleted its files: the same labels again make a new teacher
        fingerprint = hashlib.sha256(f"{fingerprint}:after v{existing.number}".encode()).hexdigest()
    recipe = Recipe(
        settings.teacher_model,
        config,
        fingerprint,
        train,
        manifest={"role": TEACHER, "mode": "full", "base": settings.teacher_model},
        row={
            "mode": "full",
            "status": TEACHER,
            "train_config": {**config.to_dict(), "role": TEACHER, "pii": settings.pii},
        },
    )

    def fit() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        try:
            return fine_tune(
                settings.teacher_model,
                [e.text for e in train],
                [e.label for e in train],
                config,
                device=settings.device,  # auto: a GPU where there is one
                progress=lambda done, total: progress("train teacher", done, total),
            )
        except ModelLoadError as exc:
            raise StepError(
                f"SENTILOOP_TEACHER_MODEL={settings.teacher_model}: {exc.reason}"
            ) from exc

    return train_and_register(ctx, fit, recipe, data, progress)


def _score_pool(ctx: Context, teacher: ModelVersion, progress: Progress) -> int:
    """The teacher's calibrated predictions for every unlabelled chat it has not scored."""
    store, settings = ctx.store, ctx.settings
    total = store.count_unscored(teacher.number)
    done = 0
    for batch in store.iter_unscored(teacher.number, settings.score_chunk):

        def report(n: int, _total: int, offset: int = done) -> None:
            progress("teacher scores the pool", offset + n, total)

        write_scores(ctx, teacher, batch, report)
        done += len(batch)
    return done


def selecting_version(ctx: Context, production: ModelVersion) -> ModelVersion:
    """Whose probabilities choose the next batch: production's, or with
    ``SENTILOOP_SELECT_WITH=teacher`` the teacher production was distilled from (while its
    checkpoint is kept)."""
    if ctx.settings.select_with != "teacher" or production.teacher is None:
        return production
    teacher = ctx.store.version(production.teacher)
    if teacher is None or teacher.checkpoint_deleted or not Path(teacher.checkpoint_path).exists():
        return production
    return teacher
