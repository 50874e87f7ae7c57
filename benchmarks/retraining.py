"""Incremental versus full retraining, side by side in one run.

Builds a labelled set of chats from the airline pool, trains version 1 in full, adds new
labels and trains version 2 both ways through the real registry code (store, checkpoints,
calibration), then prints wall time, macro-F1 on test, per-class F1 and ECE.

    .venv/bin/python -m benchmarks.retraining [--labels 2000] [--new 200] [--seed 0]

Test metrics are for reporting only: nothing is tuned on test.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "airline"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=2000, help="labels behind version 1")
    parser.add_argument("--new", type=int, default=200, help="new labels for version 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with pool/dev/test.csv")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="sentiloop-bench-"))
    os.environ.update(
        {
            "SENTILOOP_HOME": str(home),
            "SENTILOOP_EVAL_FILE": str(args.data / "dev.csv"),
            "SENTILOOP_TEST_FILE": str(args.data / "test.csv"),
            "SENTILOOP_SEED": str(args.seed),
            "SENTILOOP_PROMOTE": "manual",
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        }
    )
    import torch

    from orchestrator import registry
    from orchestrator.context import Context
    from orchestrator.settings import load_settings
    from store import AnnotationIn, ChatIn

    with (args.data / "pool.csv").open(newline="", encoding="utf-8") as fh:
        rows = random.Random(args.seed).sample(list(csv.DictReader(fh)), args.labels + args.new)
    rows = list({r["chat_id"]: r for r in rows}.values())  # the pool repeats a few ids

    def context(mode: str) -> Context:
        os.environ["SENTILOOP_RETRAIN_MODE"] = mode
        return Context.from_settings(load_settings())

    ctx = context("full")
    ctx.store.init()
    ctx.store.add_chats([ChatIn(r["chat_id"], r["text"], {}, None) for r in rows])
    ids = ctx.store.chat_ids_by_source([r["chat_id"] for r in rows])

    def label(batch: list[dict[str, str]], first: int) -> None:
        now = datetime.now(UTC)
        ctx.store.upsert_annotations(
            1,
            [
                AnnotationIn(
                    first + i, first + i, ids[r["chat_id"]], r["label"], "gold", False, now, now
                )
                for i, r in enumerate(batch)
            ],
        )

    def quiet(stage: str, done: int, total: int) -> None:
        return None

    first, second = rows[: args.labels], rows[args.labels :]
    print(f"# sentiloop retraining benchmark: {len(first)} labels, then +{len(second)}")
    command = [
        "python",
        "-m",
        "benchmarks.retraining",
        *(argv if argv is not None else sys.argv[1:]),
    ]
    print(f"command: {' '.join(command)}")
    print(
        f"machine: {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
        f"cuda {torch.cuda.is_available()}, seed {args.seed}"
    )
    label(first, 1)
    t0 = time.monotonic()
    v1 = registry.retrain(ctx, quiet)
    seconds = time.monotonic() - t0
    print(f"v1 (full, {v1['n_train']} labels): {seconds:.0f} s, dev macro-F1 {v1['macro_f1']:.3f}")
    ctx.store.promote(v1["version"], actor="benchmark")
    label(second, 100_000)

    results: dict[str, dict[str, Any]] = {}
    for mode in ("incremental", "full"):
        mctx = context(mode)
        t0 = time.monotonic()
        out = registry.retrain(mctx, quiet)
        wall = time.monotonic() - t0
        version = mctx.store.version(out["version"])
        assert version is not None
        results[mode] = {
            "wall": wall,
            "train": version.train_seconds,
            "n": out["n_train"],
            "metrics": version.metrics,
        }

    lines = render(results)
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    shutil.rmtree(home, ignore_errors=True)
    return 0


def render(results: dict[str, dict[str, Any]]) -> list[str]:
    inc, full = results["incremental"], results["full"]
    ti, tf = inc["metrics"]["test"], full["metrics"]["test"]

    def f(x: float) -> str:
        return f"{x:.3f}"

    rows = [
        ("examples trained on", str(inc["n"]), str(full["n"]), ""),
        (
            "wall time of the step (s)",
            f"{inc['wall']:.1f}",
            f"{full['wall']:.1f}",
            f"{inc['wall'] / full['wall']:.2f}",
        ),
        (
            "of which training (s)",
            f"{inc['train']:.1f}",
            f"{full['train']:.1f}",
            f"{inc['train'] / full['train']:.2f}",
        ),
        (
            "test macro-F1",
            f(ti["macro_f1"]),
            f(tf["macro_f1"]),
            f"{ti['macro_f1'] - tf['macro_f1']:+.3f}",
        ),
        (
            "test accuracy",
            f(ti["accuracy"]),
            f(tf["accuracy"]),
            f"{ti['accuracy'] - tf['accuracy']:+.3f}",
        ),
    ]
    for lab in ("negative", "neutral", "positive"):
        a, b = ti["per_class"][lab]["f1"], tf["per_class"][lab]["f1"]
        rows.append((f"test F1 {lab}", f(a), f(b), f"{a - b:+.3f}"))
    rows.append(
        ("test ECE (calibrated)", f(ti["ece"]), f(tf["ece"]), f"{ti['ece'] - tf['ece']:+.3f}")
    )
    rows.append(
        (
            "dev ECE before / after T",
            f"{inc['metrics']['ece_before']:.3f} / {inc['metrics']['ece']:.3f}",
            f"{full['metrics']['ece_before']:.3f} / {full['metrics']['ece']:.3f}",
            "",
        )
    )
    out = ["", "| | incremental | full | incremental vs full |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    ratio = inc["wall"] / full["wall"]
    gap = (tf["macro_f1"] - ti["macro_f1"]) * 100
    out += [
        "",
        f"goal 1, incremental wall time <= 30% of full: {ratio:.0%} -> "
        f"{'met' if ratio <= 0.30 else 'missed'}",
        f"goal 2, incremental macro-F1 within 1 point of full: incremental - full = "
        f"{-gap:+.1f} points -> {'met' if gap <= 1.0 else 'missed'}",
    ]
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
