"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import csv
import os
import random
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings as hypothesis_settings

from store import ModelVersion, Store

# CI runs the same generated examples every time: a failure there is reproducible, and
# exploring new ones is for local runs
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("dev", database=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT: dict[str, Any] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
#: What the wheel ships: the top-level packages named in pyproject.toml.
TOP_LEVEL_PACKAGES = sorted(
    {name.split(".")[0] for name in PYPROJECT["tool"]["setuptools"]["packages"]}
)
AIRLINE = REPO_ROOT.parent / "shared" / "data" / "airline"


def airline_sample(split: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts and labels of a seeded random sample of a split, or skip if the data is absent."""
    path = AIRLINE / f"{split}.csv"
    if not path.is_file():
        pytest.skip(f"airline data not found at {path} (expected in ../shared next to the repo)")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    pick = np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)
    return [rows[i]["text"] for i in pick], [rows[i]["label"] for i in pick]


def race_promotions(url: str, versions: int, rounds: int = 1) -> list[BaseException]:
    """Promote ``versions`` different versions from as many threads at once (each with its
    own engine) and return what they raised."""
    barrier = threading.Barrier(versions)
    errors: list[BaseException] = []

    def promote(n: int) -> None:
        own = Store(url)
        barrier.wait()
        try:
            for _ in range(rounds):
                own.promote(n, actor=f"t{n}")
        except BaseException as exc:  # collected for the caller to assert on
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=promote, args=(n,)) for n in range(1, versions + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.fixture
def airline() -> Path:
    """The real labelled tweets (never copied into the repository)."""
    if not (AIRLINE / "pool.csv").is_file():
        pytest.skip(f"airline data not found at {AIRLINE}")
    return AIRLINE


def airline_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def dev_sample(airline: Path, dest: Path, n: int, seed: int = 3) -> Path:
    """A seeded random ``n`` of dev.csv written to ``dest``: a small evaluation file."""
    rows = random.Random(seed).sample(airline_rows(airline / "dev.csv"), n)
    with dest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dest


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.init()
    yield store
    store.dispose()


def make_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """A Context on a fresh SQLite store in ``tmp_path``; ``env`` sets SENTILOOP_<NAME>."""
    from orchestrator.context import Context
    from orchestrator.settings import load_settings

    monkeypatch.setenv("SENTILOOP_HOME", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(f"SENTILOOP_{key.upper()}", value)
    ctx = Context.from_settings(load_settings())
    ctx.store.init()
    return ctx


def version_row(number: int, **fields: Any) -> ModelVersion:
    """A registry row for version ``number`` (by default its checkpoint is never loaded)."""
    defaults: dict[str, Any] = {
        "base_model": "b",
        "checkpoint_path": f"/nonexistent/v{number}",
        "weights_sha256": "0" * 64,
        "data_fingerprint": f"fp{number}",
    }
    return ModelVersion(number=number, **{**defaults, **fields})
