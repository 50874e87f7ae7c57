"""Serving throughput, latency, hot swaps and memory: ``sentiloop serve`` against a baseline.

Starts, side by side, the real service (``python -m orchestrator serve`` on a fresh store of
``--versions`` versions of one fine-tuned checkpoint, default settings) and the obvious
alternative (``benchmarks/serving_baseline.py``: transformers' pipeline once per request in
FastAPI's thread pool, on v1's checkpoint). Both get the same closed-loop load: N clients,
each sending single airline-pool messages one after another, for ``--seconds`` per level after
``--warmup``. Then ``--memory-requests`` requests against the service (RSS after a warm-up
and at the end), and a phase at ``--swap-clients`` clients during which this process
promotes and rolls back through the store; every response must be 200 and name a version
that was production at some moment during its request (allowing ``--switch-lag``).

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.serving [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.serving_load import (  # noqa: E402
    Load,
    Record,
    child_env,
    free_port,
    make_registry,
    metric_values,
    rss_mb,
    server,
    stats,
    wait_ready,
)

TARGET_RATIO_32 = 5.0
TARGET_P99_32_MS = 100.0
TARGET_P50_1_MS = 15.0
TARGET_RSS_GROWTH = 0.10


def run_level(load: Load, url: str, clients: int, warmup: float, seconds: float) -> dict[str, Any]:
    t0 = time.monotonic() + warmup
    records, cpu = load.run(url, clients, stop_at=t0 + seconds)
    return stats(records, t0, cpu * seconds / (seconds + warmup))


def print_table(rows: list[dict[str, Any]]) -> None:
    """Both systems per level, then service / baseline (req/s: higher is better; ms: lower)."""
    head = (
        f"{'clients':>7} {'system':<8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'errors':>6} {'batch':>5} {'client CPU':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        for system in ("baseline", "service"):
            s = r[system]
            print(
                f"{r['clients']:>7} {system:<8} {s['rps']:>8.1f} {s['p50']:>8.1f} "
                f"{s['p95']:>8.1f} {s['p99']:>8.1f} {s['errors']:>6} "
                f"{'-' if s['batch'] is None else format(s['batch'], '.1f'):>5} "
                f"{s['client_cores']:>9.2f}c"
            )
        b, s = r["baseline"], r["service"]
        ratios = [s["rps"] / b["rps"] if b["rps"] else float("nan")]
        ratios += [s[p] / b[p] for p in ("p50", "p95", "p99")]
        print(f"{r['clients']:>7} {'ratio':<8} " + " ".join(f"{x:>7.2f}x" for x in ratios))


def memory_phase(load: Load, url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, read RSS, send ``--memory-requests`` requests sampling RSS, read it again."""
    load.run(url, args.memory_clients, total=max(1000, args.memory_requests // 20))
    after_warmup = rss_mb(pid)
    started = time.monotonic()
    futures = load.start(url, args.memory_clients, total=args.memory_requests)
    samples: list[float] = []  # one a second: a curve tells growth from a plateau
    while not all(f.done() for f in futures):
        time.sleep(1.0)
        samples.append(rss_mb(pid))
    records, cpu = load.collect(futures)
    end = rss_mb(pid)
    result = stats(records, started, cpu)
    tenths = [samples[min(len(samples) - 1, len(samples) * k // 10)] for k in range(1, 10)]
    result.update(rss_after_warmup=after_warmup, rss_end=end, rss_tenths=tenths)
    result["rss_peak"] = max([after_warmup, end, *samples])
    result["rss_ratio"] = end / after_warmup
    return result


def inconsistent(
    records: list[Record], timeline: list[tuple[float, float, int]], lag: float
) -> list[Record]:
    """The 200 responses whose version was not production at any moment of [start - lag, end].

    ``timeline`` holds, per registry change, the span of the call that committed it and the
    version it made production; version i was production from (at the earliest) the start
    of its call to (at the latest) the end of the next call."""
    bad = []
    for r in records:
        if r.status != 200:
            continue
        allowed = {
            v
            for i, (b, _, v) in enumerate(timeline)
            if r.end >= b and (i + 1 == len(timeline) or r.start - lag <= timeline[i + 1][1])
        }
        if r.version not in allowed:
            bad.append(r)
    return bad


def swap_phase(load: Load, url: str, store: Any, args: argparse.Namespace) -> dict[str, Any]:
    """3 promotions and 2 rollbacks under load; check every response's version."""
    first = store.production().number
    ops: list[int | None] = [first + 1, first + 2, first + 3, None, None]  # None: a rollback
    t0 = time.monotonic()
    stop_at = t0 + args.warmup + args.swap_every * (len(ops) + 1)
    futures = load.start(url, args.swap_clients, stop_at=stop_at)
    # (earliest, latest) moment each version became production: the promote call's span
    timeline: list[tuple[float, float, int]] = [(float("-inf"), float("-inf"), first)]
    for i, target in enumerate(ops):
        time.sleep(max(0.0, t0 + args.warmup + args.swap_every * (i + 1) - time.monotonic()))
        before = time.monotonic()
        if target is None:
            promotion = store.rollback(actor="benchmark", reason="serving benchmark")
        else:
            promotion = store.promote(target, actor="benchmark", reason="bench", forced=True)
        timeline.append((before, time.monotonic(), int(promotion.version)))
    records, cpu = load.collect(futures)
    bad = inconsistent(records, timeline, args.switch_lag)
    switches = []
    for b, a, v in timeline[1:]:
        firsts = [r.end for r in records if r.version == v and r.start >= b]
        switches.append((v, (min(firsts) - a) if firsts else float("nan")))
    result = stats(records, t0, cpu)
    result.update(
        failed=sum(r.status != 200 or r.version < 0 for r in records),
        total=len(records),
        sequence=[v for _, _, v in timeline],
        per_version=dict(sorted(Counter(r.version for r in records if r.status == 200).items())),
        inconsistent=[(round(r.start - t0, 3), round(r.end - t0, 3), r.version) for r in bad],
        switch_s=switches,
    )
    return result


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report_targets(
    rows: list[dict[str, Any]], mem: dict[str, Any] | None, swap: dict[str, Any]
) -> None:
    by = {r["clients"]: r for r in rows}
    if 32 in by:
        b, s = by[32]["baseline"], by[32]["service"]
        ratio = s["rps"] / b["rps"] if b["rps"] else float("inf")
        print(
            f"target: 32 clients >= {TARGET_RATIO_32:.0f}x baseline req/s: {ratio:.2f}x "
            f"{verdict(ratio >= TARGET_RATIO_32)}"
        )
        print(
            f"target: 32 clients service p99 < {TARGET_P99_32_MS:.0f} ms: {s['p99']:.1f} ms "
            f"{verdict(s['p99'] < TARGET_P99_32_MS)}"
        )
    else:
        print("target: 32 clients: n/a (level not run)")
    if 1 in by:
        p50 = by[1]["service"]["p50"]
        print(
            f"target: 1 client service p50 < {TARGET_P50_1_MS:.0f} ms: {p50:.1f} ms "
            f"{verdict(p50 < TARGET_P50_1_MS)}"
        )
    else:
        print("target: 1 client: n/a (level not run)")
    failed, bad = swap["failed"], len(swap["inconsistent"])
    print(
        f"target: 0 failed requests during promotions/rollbacks: {failed} failed, "
        f"{bad} naming a wrong version {verdict(failed == 0 and bad == 0)}"
    )
    if mem is None:
        print("target: RSS flat over the memory phase: n/a (skipped)")
    else:
        growth = mem["rss_ratio"] - 1
        print(
            f"target: RSS after {mem['requests']:,} requests within "
            f"{100 * TARGET_RSS_GROWTH:.0f}% of after warm-up: {100 * growth:+.1f}% "
            f"{verdict(growth <= TARGET_RSS_GROWTH)}"
        )


def print_context(args: argparse.Namespace, home: Path) -> Any:
    """Command, machine and the service's effective settings (read as it will read them)."""
    import torch

    from orchestrator.settings import Settings
    from training import pick_device, resolve_precision
    from training.quantize import cpu_capabilities

    settings = Settings(home=home, database_url=None)
    device = pick_device(settings.device)
    program = ["-m", "benchmarks.serving"] if __package__ else [sys.argv[0]]
    print(
        f"command: PYTHONPATH=. HF_HUB_OFFLINE=1 {shlex.join(['python', *program, *sys.argv[1:]])}"
    )
    feats = [
        f for f in ("avx2", "avx512_vnni", "avx512_bf16", "amx_bf16") if cpu_capabilities().get(f)
    ]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} logical cores ({', '.join(feats)}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, device {device}"
    )
    print(
        f"service settings: precision {settings.score_precision} -> "
        f"{resolve_precision(settings.score_precision, device)}, max batch "
        f"{settings.serve_max_batch}, batch wait {settings.serve_batch_wait_ms:g} ms, poll "
        f"{settings.serve_poll_seconds:g} s, shadow share {settings.serve_shadow_share:g}, "
        f"access log {'on' if settings.serve_access_log else 'off'}, max_length "
        f"{settings.max_length}"
    )
    print(
        f"load: {args.load_procs} load process(es), httpx.AsyncClient on uvloop, one "
        f"connection per client; levels {args.levels}, {args.warmup:g} s warm-up + "
        f"{args.seconds:g} s each; load average (1, 5, 15 min) now "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if args.versions < 4 or args.load_procs < 1 or min(levels, default=0) < 1:
        sys.exit("--versions must be at least 4, --load-procs and every level at least 1")
    from benchmarks.airline import read_split
    from store import Store

    tmp = tempfile.TemporaryDirectory(prefix="sentiloop-bench-serving-")
    home = Path(tmp.name)
    try:
        settings = print_context(args, home)
        t = time.perf_counter()
        ckpt, key = make_registry(
            settings.db_url, home / "models", args.checkpoint, args.versions, args.n_train
        )
        made = f"fine-tuned on {args.n_train} pool rows x 2 epochs"
        print(
            f"registry: {args.versions} versions of one checkpoint "
            f"({f'from {args.checkpoint}' if args.checkpoint else made}; classifier bias shifted "
            f"per version), made in {time.perf_counter() - t:.0f} s; v1 in production"
        )
        ports = {"service": free_port(), "baseline": free_port()}
        svc_cmd = ["-m", "orchestrator", "serve", "--port", str(ports["service"])]
        base_cmd = ["-m", "uvicorn", "benchmarks.serving_baseline:app", "--no-access-log"]
        base_cmd += ["--port", str(ports["baseline"]), "--log-level", "warning"]
        with (
            server("service", svc_cmd, child_env(SENTILOOP_HOME=str(home)), home) as svc,
            server("baseline", base_cmd, child_env(BASELINE_MODEL=str(ckpt)), home) as base,
        ):
            load = Load(args.load_procs, key, read_split("pool")[0])
            store = Store(settings.db_url)
            try:
                procs = {"service": svc, "baseline": base}
                return benchmark(args, levels, load, procs, ports, home, store)
            finally:
                load.pool.shutdown(cancel_futures=True)
                store.dispose()
    finally:
        tmp.cleanup()


def service_counts(root: str) -> dict[str, float]:
    """The service's batching, shadow and reload counters, from its /metrics page."""
    import httpx

    names = ("batch_size_sum", "batch_size_count", "shadow_messages_total", "model_reloads_total")
    page = httpx.get(f"{root}/metrics", timeout=10).text
    values = metric_values(page, [f"sentiloop_{n}" for n in names])
    return {n: values.get(f"sentiloop_{n}", 0.0) for n in names}


def benchmark(
    args: argparse.Namespace,
    levels: list[int],
    load: Load,
    procs: dict[str, Any],
    ports: dict[str, int],
    home: Path,
    store: Any,
) -> int:
    """The phases, once both servers are started."""
    roots = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
    urls = {s: f"{root}/v1/sentiment" for s, root in roots.items()}
    t = time.perf_counter()
    ready = wait_ready(procs["service"], f"{roots['service']}/readyz", home, "service", 300)
    wait_ready(procs["baseline"], f"{roots['baseline']}/livez", home, "baseline", 300)
    print(
        f"servers ready in {time.perf_counter() - t:.0f} s: the service serves "
        f"v{ready['model_version']}, v2..v{args.versions} are candidates (v{args.versions} is "
        "loaded for shadow scoring)"
    )
    for url in urls.values():  # first requests: lazy imports, oneDNN kernels
        load.run(url, 4, total=64)
    rows = []
    for clients in levels:
        row: dict[str, Any] = {"clients": clients}
        for system in ("baseline", "service"):
            before = service_counts(roots["service"])
            row[system] = run_level(load, urls[system], clients, args.warmup, args.seconds)
            after = service_counts(roots["service"])
            calls = after["batch_size_count"] - before["batch_size_count"]
            msgs = after["batch_size_sum"] - before["batch_size_sum"]
            row[system]["batch"] = msgs / calls if system == "service" and calls else None
        rows.append(row)
        print(
            f"  {clients} clients: baseline {row['baseline']['rps']:.1f} req/s, service "
            f"{row['service']['rps']:.1f} req/s",
            flush=True,
        )
    print()
    print_table(rows)
    mem = None
    if args.memory_requests > 0:
        mem = memory_phase(load, urls["service"], procs["service"].pid, args)
        print()
        print(
            f"memory: {mem['requests']:,} requests at {args.memory_clients} clients "
            f"({mem['rps']:.1f} req/s, p99 {mem['p99']:.1f} ms, {mem['errors']} errors): "
            f"service RSS {mem['rss_after_warmup']:.0f} MB after warm-up, "
            f"{mem['rss_end']:.0f} MB at the end (peak {mem['rss_peak']:.0f} MB), "
            f"{mem['rss_ratio']:.3f}x"
        )
        print(
            "  RSS at each tenth of the phase (MB): "
            + ", ".join(f"{x:.0f}" for x in mem["rss_tenths"])
        )
    swap = swap_phase(load, urls["service"], store, args)
    print_swaps(swap, args)
    c = service_counts(roots["service"])
    print(
        f"service totals: {c['batch_size_count']:,.0f} model calls (mean batch "
        f"{c['batch_size_sum'] / max(c['batch_size_count'], 1):.1f} messages), "
        f"{c['shadow_messages_total']:,.0f} messages shadow-scored, "
        f"{c['model_reloads_total']:.0f} versions put in service"
    )
    loadavg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the end: {loadavg}")
    print()
    report_targets(rows, mem, swap)
    if args.out:
        figures = {"levels": rows, "memory": mem, "swaps": swap}
        Path(args.out).write_text(json.dumps(figures, indent=1))
        print(f"wrote {args.out}")
    errors = sum(r[s]["errors"] for r in rows for s in ("baseline", "service"))
    return 0 if errors == 0 and swap["failed"] == 0 else 1


def print_swaps(swap: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"promotions: {swap['total']:,} requests at {args.swap_clients} clients "
        f"({swap['rps']:.1f} req/s, p99 {swap['p99']:.1f} ms), production "
        f"{' -> '.join(f'v{v}' for v in swap['sequence'])}, {args.swap_every:g} s apart"
    )
    per_version = ", ".join(f"v{v}: {n:,}" for v, n in swap["per_version"].items())
    print(f"  responses per version: {per_version}")
    firsts = ", ".join(f"v{v} {s:.2f} s" for v, s in swap["switch_s"])
    print(f"  first answer from the new version after each change committed: {firsts}")
    print(
        f"  failed requests: {swap['failed']}; responses naming a version that was not "
        f"production during the request (switch lag {args.switch_lag:g} s): "
        f"{len(swap['inconsistent'])}"
        + (
            f" (start s, end s, version): {swap['inconsistent'][:10]}"
            if swap["inconsistent"]
            else ""
        )
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--levels", default="1,8,32,64", help="concurrent clients per level")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each")
    p.add_argument("--memory-requests", type=int, default=100_000, help="0 skips the phase")
    p.add_argument("--memory-clients", type=int, default=32)
    p.add_argument("--swap-clients", type=int, default=32)
    p.add_argument("--swap-every", type=float, default=6.0, help="seconds between registry changes")
    p.add_argument(
        "--switch-lag",
        type=float,
        default=5.0,
        help="how long after a registry change the old version may still answer "
        "(polls plus loading and checking the new one)",
    )
    p.add_argument("--load-procs", type=int, default=1, help="load generator processes")
    p.add_argument("--versions", type=int, default=4, help="versions registered (at least 4)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: fine-tune one first")
    p.add_argument("--n-train", type=int, default=300, help="pool rows to fine-tune on")
    p.add_argument("--out", default=None, help="also write every figure as JSON here")
    return p


if __name__ == "__main__":
    sys.exit(main())
