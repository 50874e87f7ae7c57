"""The airline data the benchmarks read (never copied into the repository)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "airline"


def read_split(split: str) -> tuple[list[str], list[str]]:
    """Texts and gold labels of ``pool``, ``dev`` or ``test``; exits if the data is missing."""
    path = DATA_DIR / f"{split}.csv"
    if not path.is_file():
        sys.exit(f"airline data not found at {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["label"] for r in rows]
