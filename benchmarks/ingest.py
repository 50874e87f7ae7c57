"""Ingest memory and speed from a 1 MB to a 1 GB file.

The pool's tweets are repeated under fresh chat ids (with the pool's other columns, and one row
in 1,000 bad) until a CSV of each size exists; each file is ingested into a fresh SQLite store by
a child process, which reports its peak RSS. A second child reads the same file whole, as ingest
did before it streamed, as the baseline of what not streaming costs. Ratios are against the
smallest file, measured in the same run.

    .venv/bin/python -m benchmarks.ingest [--sizes-mb 1,10,100,1000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.airline import DATA_DIR, REPO_ROOT


def make_file(path: Path, size_mb: int) -> int:
    """A CSV of about ``size_mb`` MB: pool rows under fresh ids; returns its row count."""
    with (DATA_DIR / "pool.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    target = size_mb * 1_000_000
    n = 0
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        while out.tell() < target:
            row = list(rows[n % len(rows)])
            row[0] = f"bench-{n}"
            if n % 1000 == 999:
                row[1] = ""  # a bad row now and then: rejected, reported, the rest stored
            writer.writerow(row)
            n += 1
    return n


def child(mode: str, path: Path, db: Path) -> None:
    """Run in a fresh process: ingest (or read whole) and print peak RSS and counts."""
    started = time.perf_counter()
    if mode == "stream":
        from store import Store, ingest_file

        store = Store(f"sqlite:///{db}")
        store.init()
        report = ingest_file(store, path)
        counts: dict[str, float] = {
            "stored": report.stored,
            "rejected": report.n_rejected,
            "rows": report.rows,
        }
    else:  # what ingest did before: the whole file in memory, decoded, then parsed
        content = path.read_bytes().decode("utf-8", errors="surrogateescape")
        counts = {"rows": content.count("\n")}
    counts["seconds"] = round(time.perf_counter() - started, 2)
    counts["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(counts))


def run_child(mode: str, path: Path, db: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ingest", "--child", mode, str(path), str(db)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", default="1,10,100,1000", help="file sizes in MB")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (a temp dir)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "FILE", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    if not (DATA_DIR / "pool.csv").is_file():
        sys.exit(f"airline data not found at {DATA_DIR}")
    scratch = Path(tempfile.mkdtemp(prefix="sentiloop-bench-ingest-", dir=args.dir))
    rows_out = []
    try:
        for size in [int(s) for s in args.sizes_mb.split(",")]:
            path = scratch / f"chats-{size}mb.csv"
            n = make_file(path, size)
            stream = run_child("stream", path, scratch / f"store-{size}.db")
            whole = run_child("whole", path, scratch / "unused.db")
            assert stream["rows"] == n and stream["stored"] + stream["rejected"] == n
            rows_out.append((size, n, stream, whole))
            print(
                f"{size} MB: {n:,} rows, {stream['seconds']} s, "
                f"peak RSS {stream['peak_rss_mb']} MB "
                f"(whole-file read: {whole['peak_rss_mb']} MB)",
                flush=True,
            )
            path.unlink()
            (scratch / f"store-{size}.db").unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = rows_out[0][2]["peak_rss_mb"]
    print()
    print(
        "| file | rows | stored | rejected | rows/s | peak RSS, streaming ingest "
        "| ratio to the smallest | peak RSS, reading the file whole (before) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, n, stream, whole in rows_out:
        print(
            f"| {size} MB | {n:,} | {int(stream['stored']):,} | {int(stream['rejected']):,} "
            f"| {n / max(stream['seconds'], 1e-9):,.0f} | {stream['peak_rss_mb']} MB "
            f"| {stream['peak_rss_mb'] / base:.2f} | {whole['peak_rss_mb']} MB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
