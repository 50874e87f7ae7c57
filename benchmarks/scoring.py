"""Scoring throughput: transformers ``pipeline`` against ``Scorer`` in each precision.

Run ``python -m benchmarks.scoring`` (or ``python benchmarks/scoring.py``) from the
repository root with ``HF_HUB_OFFLINE=1``. Each mode runs in a fresh subprocess (this
script re-invoked with ``--worker MODE``) so its peak RSS is its own. Every mode scores
the same texts (the airline pool resampled to ``--n``); agreement is the share of
``dev.csv`` rows whose argmax matches ``Scorer`` in fp32. Without ``--checkpoint`` a
checkpoint is fine-tuned first (300 pool rows, 2 epochs, ~30 s) into a temp dir.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.airline import read_split  # noqa: E402
from benchmarks.scoring_pool import pool_section, pool_worker  # noqa: E402

ALL_MODES = ("pipeline", "fp32", "bf16", "int8", "auto")
TARGET_RATIO = 4.0
TARGET_AGREEMENT = 0.99
TARGET_TOP_K_S = 0.5


def _bench_texts(n: int, seed: int) -> list[str]:
    """The pool, resampled (with replacement beyond its size) to ``n`` texts."""
    import numpy as np

    pool, _ = read_split("pool")
    idx = np.random.default_rng(seed).choice(len(pool), size=n, replace=n > len(pool))
    return [pool[i] for i in idx]


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Prefers VmHWM from /proc: Linux carries ``ru_maxrss`` over an exec from the parent,
    so a worker started by a coordinator that had trained a model would report the
    coordinator's peak instead of its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- worker: one mode, in its own process ----------------------------------------------------


def _pipeline_scorer(args: argparse.Namespace) -> Any:
    """A callable texts -> (n, 3) probabilities through transformers' pipeline."""
    import numpy as np
    import torch
    from transformers import pipeline

    from training import LABELS, pick_device

    device = pick_device(args.device)
    clf = pipeline(
        "text-classification",
        model=str(args.checkpoint),
        tokenizer=str(args.checkpoint),
        top_k=None,
        batch_size=args.batch_size,
        truncation=True,
        max_length=args.max_length,
        device=device,
        dtype=torch.float32,
    )
    column = {label: i for i, label in enumerate(LABELS)}

    def score(texts: list[str]) -> Any:
        out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        results: Any = clf(texts)
        for row, result in enumerate(results):
            for item in result:
                out[row, column[str(item["label"]).lower()]] = item["score"]
        return out

    return score


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from training import Scorer

    if args.threads:
        torch.set_num_threads(args.threads)
    mode = args.worker
    texts = _bench_texts(args.n, args.seed)
    dev_texts, dev_labels = read_split("dev")
    started = time.perf_counter()
    effective = "fp32"
    if mode == "pipeline":
        score = _pipeline_scorer(args)
    else:
        scorer = Scorer(
            args.checkpoint,
            device=args.device,
            batch_size=args.batch_size,
            max_length=args.max_length,
            precision=mode,
        )
        scorer.predict_proba(texts[:8])  # load (and quantise) now, not inside the timing
        effective = scorer.effective_precision or mode
        score = scorer.predict_proba
    load_s = time.perf_counter() - started
    score(texts[: min(len(texts), 2 * args.batch_size)])  # warm-up: oneDNN/cuBLAS set-up
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        score(texts)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rates.append(len(texts) / (time.perf_counter() - t0))
    rss = _peak_rss_mb()  # before the dev pass, so it reflects scoring --n texts
    dev_pred = np.asarray(score(dev_texts)).argmax(axis=1)
    from training import LABELS

    truth = np.array([LABELS.index(lb) for lb in dev_labels])
    return {
        "mode": mode,
        "effective": effective,
        "chats_per_s": max(rates),
        "all_rates": [round(r, 1) for r in rates],
        "peak_rss_mb": rss,
        "load_s": load_s,
        "dev_argmax": dev_pred.tolist(),
        "dev_accuracy": float((dev_pred == truth).mean()),
        "threads": torch.get_num_threads(),
    }


# -- coordinator ----------------------------------------------------------------------------


def _train_checkpoint(root: Path) -> Path:
    import numpy as np

    from training import DEFAULT_BASE_MODEL, TrainConfig, fine_tune, save_checkpoint

    texts, labels = read_split("pool")
    pick = np.random.default_rng(0).choice(len(texts), size=300, replace=False)
    model, tokenizer = fine_tune(
        DEFAULT_BASE_MODEL,
        [texts[i] for i in pick],
        [labels[i] for i in pick],
        TrainConfig(epochs=2),
        device="auto",
    )
    return save_checkpoint(model, tokenizer, root, "bench", {"n_train": 300}).path


def _run_worker(
    mode: str, args: argparse.Namespace, result: Path, extra: list[str] | None = None
) -> dict[str, Any] | str:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scoring",
        "--worker",
        mode,
        "--result",
        str(result),
        "--checkpoint",
        str(args.checkpoint),
        "--n",
        str(args.n),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--pool-precision",
        args.pool_precision,
        "--chunk",
        str(args.chunk),
        *(extra or []),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "true")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not result.is_file():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit code {proc.returncode}"
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def _selection_timing() -> tuple[float, float]:
    """Seconds for select('entropy') and for top_k alone: top 1,000 of 1,000,000 rows."""
    import numpy as np

    from training import select, top_k

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=1_000_000)
    t0 = time.perf_counter()
    select("entropy", probs, 1000)
    select_s = time.perf_counter() - t0
    utility = -(probs * np.log(probs)).sum(axis=1)
    t0 = time.perf_counter()
    top_k(utility, 1000)
    return select_s, time.perf_counter() - t0


def _coordinate(args: argparse.Namespace) -> int:
    import torch

    from training import resolve_precision
    from training.model import pick_device

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown:
        sys.exit(f"unknown mode(s) {unknown}; choose from {list(ALL_MODES)}")
    run_modes = modes if "fp32" in modes or not modes else [*modes, "fp32"]  # the reference

    device = pick_device(args.device)
    program = ["-m", "benchmarks.scoring"] if __package__ else [sys.argv[0]]
    command = shlex.join(["python", *program, *sys.argv[1:]])
    print(f"command: PYTHONPATH=. HF_HUB_OFFLINE=1 {command}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
        f"cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads"
        f"{f' (workers: {args.threads})' if args.threads else ''}, device {device}"
        f"{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}"
    )
    if device.type == "cpu":
        from training.quantize import cpu_capabilities

        caps = cpu_capabilities()
        feats = [
            f for f in ("avx2", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if caps.get(f)
        ]
        print(f"cpu features: {', '.join(feats) or 'unknown'}")
    print(f"precision auto -> {resolve_precision('auto', device)} on {device}")

    tmpdir = tempfile.TemporaryDirectory(prefix="sentiloop-bench-")
    tmp = tmpdir.name
    if args.checkpoint is None:
        t0 = time.perf_counter()
        args.checkpoint = _train_checkpoint(Path(tmp))
        took = time.perf_counter() - t0
        print(f"checkpoint: fine-tuned 300 pool rows x 2 epochs in {took:.0f} s")
    else:
        print(f"checkpoint: {args.checkpoint}")
    print(
        f"texts: {args.n} (airline pool resampled, seed {args.seed}), batch {args.batch_size}, "
        f"max_length {args.max_length}, best of {args.repeats}; agreement on "
        f"{len(read_split('dev')[0])} dev rows"
    )
    results: dict[str, dict[str, Any] | str] = {}
    for mode in run_modes:
        results[mode] = _run_worker(mode, args, Path(tmp) / f"{mode}.json")

    fp32 = results.get("fp32")
    pipe = results.get("pipeline")
    reference = fp32["dev_argmax"] if isinstance(fp32, dict) else None
    base_rate = pipe["chats_per_s"] if isinstance(pipe, dict) else None
    header = (
        f"{'mode':<10} {'runs as':<8} {'chats/s':>8} {'peak RSS MB':>11} {'x pipeline':>10} "
        f"{'agree fp32':>10} {'dev acc':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for mode in modes:
        res = results[mode]
        if isinstance(res, str):
            print(f"{mode:<10} failed: {res}")
            rows.append({"mode": mode, "error": res})
            continue
        ratio = res["chats_per_s"] / base_rate if base_rate else None
        agree = None
        if reference is not None:
            agree = sum(a == b for a, b in zip(res["dev_argmax"], reference, strict=True)) / len(
                reference
            )
        row = {
            "mode": mode,
            "effective": res["effective"],
            "chats_per_s": round(res["chats_per_s"], 1),
            "peak_rss_mb": round(res["peak_rss_mb"]),
            "ratio_vs_pipeline": None if ratio is None else round(ratio, 2),
            "agreement_fp32": None if agree is None else round(agree, 4),
            "dev_accuracy": round(res["dev_accuracy"], 4),
            "runs": res["all_rates"],
            "threads": res["threads"],
        }
        rows.append(row)
        ratio_s = "n/a" if ratio is None else f"{ratio:.2f}x"
        agree_s = "n/a" if agree is None else f"{100 * agree:.2f}%"
        print(
            f"{mode:<10} {res['effective']:<8} {res['chats_per_s']:>8.1f} "
            f"{res['peak_rss_mb']:>11.0f} {ratio_s:>10} {agree_s:>10} "
            f"{100 * res['dev_accuracy']:>6.1f}%"
        )
    select_s, top_k_s = _selection_timing()
    print()
    print(
        f"selection: top-1000 of 1,000,000 rows: select('entropy') {select_s:.3f} s "
        f"(modAL utility + top_k), top_k alone {top_k_s:.3f} s"
    )

    scored = [r for r in rows if "error" not in r and r["mode"] != "pipeline"]
    best = max(scored, key=lambda r: r["chats_per_s"], default=None)
    print()
    if best is not None and best["ratio_vs_pipeline"] is not None:
        ok = best["ratio_vs_pipeline"] >= TARGET_RATIO
        print(
            f"target: best mode ({best['mode']}) >= {TARGET_RATIO:.0f}x pipeline: "
            f"{best['ratio_vs_pipeline']:.2f}x {'met' if ok else 'MISSED'}"
        )
    for r in scored:
        if r["mode"] != "fp32" and r["agreement_fp32"] is not None:
            ok = r["agreement_fp32"] >= TARGET_AGREEMENT
            print(
                f"target: {r['mode']} agreement >= {100 * TARGET_AGREEMENT:.0f}%: "
                f"{100 * r['agreement_fp32']:.2f}% {'met' if ok else 'MISSED'}"
            )
    print(
        f"target: top-k < {TARGET_TOP_K_S} s: select {select_s:.3f} s "
        f"{'met' if select_s < TARGET_TOP_K_S else 'MISSED'}"
    )

    pool_rows = pool_section(args, Path(tmp), _run_worker) if args.pool_sizes else []
    tmpdir.cleanup()
    if args.out:
        fields = [
            "mode",
            "effective",
            "chats_per_s",
            "peak_rss_mb",
            "ratio_vs_pipeline",
            "agreement_fp32",
            "dev_accuracy",
            "threads",
            "runs",
            "error",
        ]
        with open(args.out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            for r in rows:
                writer.writerow(r)
        print(f"wrote {args.out}")
    failed = [r for r in pool_rows if "error" in r]
    return 0 if all(isinstance(results[m], dict) for m in modes) and not failed else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=2000, help="texts to score per mode (default 2000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: fine-tune one first")
    p.add_argument("--modes", default="pipeline,fp32,int8,bf16", help=f"from {','.join(ALL_MODES)}")
    p.add_argument("--out", default=None, help="also write the table as CSV here")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per mode; best is kept")
    p.add_argument("--threads", type=int, default=0, help="torch threads in workers (0: default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pool-sizes",
        default="",
        help="also score stores of these many chats with the loop's score step and compare "
        "peak RSS, e.g. 10000,1000000 (default: skip)",
    )
    p.add_argument("--pool-precision", default="auto", help="precision of the --pool-sizes runs")
    p.add_argument("--chunk", type=int, default=4096, help="page size of the --pool-sizes runs")
    p.add_argument("--db", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.n < 1 or args.batch_size < 1 or args.repeats < 1:
        sys.exit("--n, --batch-size and --repeats must be positive")
    if args.worker is not None:
        if args.result is None or args.checkpoint is None:
            sys.exit("--worker needs --result and --checkpoint")
        work = pool_worker if args.worker == "store" else _worker
        args.result.write_text(json.dumps(work(args)))
        return 0
    return _coordinate(args)


if __name__ == "__main__":
    sys.exit(main())
