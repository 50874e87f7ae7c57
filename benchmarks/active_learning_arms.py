"""How one round's model is trained in the active-learning benchmark, per arm (issue #17).

* plain: from the base model on the human labels, the loop's full-retrain recipe;
* ``+warm``: from the previous round's model on the new labels plus as many earlier ones
  replayed (stratified by class), the loop's incremental recipe (lr 5e-5, at most 3 epochs,
  early stopping on dev.csv), as ``SENTILOOP_RETRAIN_MODE=incremental`` does; the first
  round is plain;
* ``+self``: self-training: the plain model labels the unlabelled pool (probabilities
  calibrated by a temperature fitted on dev.csv), ``training.self_training_set`` keeps per
  class its surest opinions (``--self-min-confidence``, at most ``--self-per-human`` per human
  label of the class) and a second model is trained from the base model on both; that one is
  evaluated and chooses the next batch.

and how the first ``--seed-size`` labels are chosen (the same for every arm of a seed
unless named; arms that share it share their first round's model):

* random, by default: the paired baseline;
* ``+coverage``: the loop's k-means coverage of a sample of the pool (base-model embeddings);
* ``+zero-shot``: class-balanced by the base model's similarity to the label descriptions
  (``domain.LABEL_DESCRIPTIONS``), each class's share covering the chats most like it.

An arm is named after its strategy, e.g. ``diverse+self`` or ``diverse+warm+zero-shot``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from benchmarks.airline import read_split
from domain import COLD_STARTS

TRAINING_ARMS = ("warm", "self")
COLD_START_ARMS = tuple(c for c in COLD_STARTS if c != "random")  # random: no flag
ARMS = TRAINING_ARMS + COLD_START_ARMS
COLD_START_SAMPLE = 5000
"""Pool chats a cold start chooses among (the loop's SENTILOOP_COLD_START_SAMPLE)."""


def split_arm(spec: str) -> tuple[str, frozenset[str]]:
    """``diverse:even+self`` -> (``diverse:even``, {``self``})."""
    strategy, *flags = spec.split("+")
    unknown = sorted(set(flags) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arm {unknown} in {spec!r}; arms: {', '.join(ARMS)}")
    if set(TRAINING_ARMS) <= set(flags):
        raise ValueError(f"{spec!r}: warm start and self-training are measured apart")
    if len(set(flags) & set(COLD_START_ARMS)) > 1:
        raise ValueError(f"{spec!r}: one cold start at a time")
    return strategy, frozenset(flags)


def first_labels(
    arm: frozenset[str], seed: int, size: int, pool_emb: Any, label_emb: Any
) -> list[int]:
    """The pool indices labelled before any model, by the arm's cold start."""
    from training import cold_start

    n = len(pool_emb)
    rng = np.random.default_rng([seed, 7])
    if not arm & set(COLD_START_ARMS):
        return [int(i) for i in rng.choice(n, size=size, replace=False)]  # same for all
    sample = np.sort(rng.choice(n, size=min(n, COLD_START_SAMPLE), replace=False))
    picked = cold_start(
        len(sample),
        size,
        embeddings=pool_emb[sample],
        class_embeddings=label_emb if "zero-shot" in arm else None,
        seed=seed,
    )
    return [int(sample[i]) for i in picked]


@dataclass
class Round:
    """What a round trained: its model (a checkpoint in a scratch directory, scored through
    ``Scorer``), seconds of training, and pseudo-labels taken per class (self-training)."""

    scorer: Any
    directory: tempfile.TemporaryDirectory[str]
    train_s: float
    pseudo: dict[str, int] | None = None

    def predict(self, texts: Sequence[str]) -> Any:
        return self.scorer.predict_proba(texts)

    def close(self) -> None:
        self.directory.cleanup()


def _config(args: argparse.Namespace, seed: int) -> Any:
    from training import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        min_steps=args.min_steps,
        learning_rate=args.lr,
        batch_size=args.train_batch,
        max_length=args.max_length,
        seed=seed,
    )


def _train(
    args: argparse.Namespace, start: str, data: Any, config: Any, dev: tuple[list[str], list[str]]
) -> Round:
    from training import Scorer, fine_tune_on

    t0 = time.perf_counter()
    model, tokenizer = fine_tune_on(
        start, data, config, device=args.device, eval_texts=dev[0], eval_labels=dev[1]
    )
    seconds = time.perf_counter() - t0
    directory = tempfile.TemporaryDirectory(prefix="sentiloop-al-")
    model.save_pretrained(directory.name)
    tokenizer.save_pretrained(directory.name)
    del model
    scorer = Scorer(
        directory.name, device=args.device, max_length=args.max_length, precision=args.precision
    )
    return Round(scorer, directory, seconds)


def train_round(
    args: argparse.Namespace,
    arm: frozenset[str],
    seed: int,
    labelled: list[int],
    fresh: int,
    previous: Round | None,
    pool: tuple[list[str], list[str]],
) -> Round:
    """The model of a round over ``labelled`` (pool indices; the last ``fresh`` are new)."""
    from orchestrator.retrain import replay_sample
    from store import TrainingExample
    from training import human_set

    pool_texts, pool_labels = pool
    dev = read_split("dev")
    texts = [pool_texts[i] for i in labelled]
    labels = [pool_labels[i] for i in labelled]
    config = _config(args, seed)
    if "warm" in arm and previous is not None:
        now = datetime.now(UTC)

        def example(i: int) -> TrainingExample:
            return TrainingExample(i, i, pool_texts[i], pool_labels[i], now)

        old = [example(i) for i in labelled[:-fresh]]
        batch = [example(i) for i in labelled[-fresh:]]
        batch += replay_sample(old, fresh, args.replay_ratio, seed)
        incremental = replace(
            config,
            epochs=args.incremental_epochs,
            min_steps=0,
            learning_rate=args.incremental_lr,
            early_stopping_patience=1,
        )
        data = human_set([e.text for e in batch], [e.label for e in batch])
        return _train(args, previous.directory.name, data, incremental, dev)
    plain = _train(args, args.base_model, human_set(texts, labels), config, ([], []))
    if "self" not in arm:
        return plain
    from training import apply_temperature, fit_temperature, self_training_set

    taken = set(labelled)
    free = [i for i in range(len(pool_texts)) if i not in taken]
    free_texts = [pool_texts[i] for i in free]
    temperature = fit_temperature(plain.predict(dev[0]), dev[1])
    probs = apply_temperature(plain.predict(free_texts), temperature)
    plain.close()
    data, pseudo = self_training_set(
        texts,
        labels,
        free_texts,
        probs,
        min_confidence=args.self_min_confidence,
        per_human=args.self_per_human,
        held_out=dev[0],
    )
    second = _train(args, args.base_model, data, config, ([], []))
    second.train_s += plain.train_s
    second.pseudo = pseudo.counts
    return second


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replay-ratio", type=float, default=1.0, help="+warm: old labels per new")
    p.add_argument("--incremental-epochs", type=int, default=3, help="+warm: at most")
    p.add_argument("--incremental-lr", type=float, default=5e-5, help="+warm")
    p.add_argument(
        "--self-min-confidence",
        type=float,
        default=0.9,
        help="+self: calibrated confidence a pseudo-label needs at least",
    )
    p.add_argument(
        "--self-per-human",
        type=float,
        default=2.0,
        help="+self: at most this many pseudo-labels of a class per human label of it",
    )


def pseudo_total(round_: Round) -> int | None:
    return None if round_.pseudo is None else int(np.sum(list(round_.pseudo.values())))
