"""The pool section of ``benchmarks.scoring`` (``--pool-sizes``): the loop's own score step
streaming SQLite stores of growing size, each in its own worker process, so that peak memory
can be compared across pool sizes."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.airline import read_split

__all__ = ["fill_store", "pool_section", "pool_worker"]


def pool_worker(args: argparse.Namespace) -> dict[str, Any]:
    """The loop's own score step over a store of ``--n`` chats: pages read from SQLite,
    scored, written back. Peak RSS here is what a worker needs for a pool this size."""
    import torch

    from benchmarks.scoring import _peak_rss_mb
    from orchestrator.context import Context
    from orchestrator.settings import Settings
    from orchestrator.steps import score

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(
        home=args.result.parent,
        database_url=args.db,
        device=args.device,
        score_precision=args.pool_precision,
        score_batch_size=args.batch_size,
        max_length=args.max_length,
        score_chunk=args.chunk,
    )
    ctx = Context.from_settings(settings)
    t0 = time.perf_counter()
    counts = score(ctx, lambda stage, done, total: None)
    seconds = time.perf_counter() - t0
    return {
        "n": args.n,
        "scored": counts["scored"],
        "written": counts["written"],
        "seconds": seconds,
        "chats_per_s": counts["scored"] / seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "effective": ctx.scorer(ctx.store.production()).effective_precision,  # type: ignore[arg-type]
    }


def fill_store(db: Path, n: int, seed: int, checkpoint: Path) -> str:
    """A store with ``n`` pool chats (resampled) and ``checkpoint`` as production v1."""
    from store import ChatIn, ModelVersion, Store
    from training.checkpoint import read_manifest

    url = f"sqlite:///{db}"
    store = Store(url)
    store.init()
    pool, _ = read_split("pool")
    import numpy as np

    rng = np.random.default_rng(seed)
    step = 50_000
    for start in range(0, n, step):
        idx = rng.integers(0, len(pool), size=min(step, n - start))
        store.add_chats(
            [ChatIn(f"c{start + j}", pool[i], {}, None) for j, i in enumerate(idx.tolist())]
        )
    store.add_version(
        ModelVersion(
            number=1,
            base_model="bench",
            checkpoint_path=str(checkpoint),
            weights_sha256=str(read_manifest(checkpoint)["weights_sha256"]),
            data_fingerprint="bench",
        )
    )
    store.promote(1, actor="benchmark")
    store.dispose()
    return url


def pool_section(
    args: argparse.Namespace, tmp: Path, run_worker: Callable[..., dict[str, Any] | str]
) -> list[dict[str, Any]]:
    """Streaming from the store: the same score step at each pool size, each in a worker
    process started by ``run_worker`` (benchmarks.scoring's), peak RSS compared."""
    sizes = [int(x) for x in args.pool_sizes.split(",") if x.strip()]
    print()
    print(
        f"streaming from the store: the loop's score step (precision {args.pool_precision}, "
        f"pages of {args.chunk}) over SQLite stores of {', '.join(f'{n:,}' for n in sizes)} chats"
    )
    rows: list[dict[str, Any]] = []
    for n in sizes:
        t0 = time.perf_counter()
        db = tmp / f"pool-{n}.db"
        url = fill_store(db, n, args.seed, args.checkpoint)
        print(f"  filled a store of {n:,} chats in {time.perf_counter() - t0:.0f} s", flush=True)
        res = run_worker("store", args, tmp / f"pool-{n}.json", ["--db", url, "--n", str(n)])
        if isinstance(res, str):
            print(f"  {n:,}: failed: {res}")
            rows.append({"n": n, "error": res})
        else:
            rows.append(res)
        db.unlink(missing_ok=True)
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return rows
    base = ok[0]
    header = f"{'pool':>10} {'scored':>10} {'chats/s':>8} {'peak RSS MB':>11} {'RSS vs first':>12}"
    print()
    print(header)
    print("-" * len(header))
    for r in ok:
        r["rss_ratio"] = r["peak_rss_mb"] / base["peak_rss_mb"]
        print(
            f"{r['n']:>10,} {r['scored']:>10,} {r['chats_per_s']:>8.1f} "
            f"{r['peak_rss_mb']:>11.0f} {r['rss_ratio']:>11.2f}x"
        )
    last = ok[-1]
    if len(ok) > 1:
        grow = last["rss_ratio"] - 1
        print(
            f"target: peak RSS at {last['n']:,} within 10% of {base['n']:,}: "
            f"{100 * grow:+.1f}% {'met' if grow <= 0.10 else 'MISSED'}"
        )
    return rows
