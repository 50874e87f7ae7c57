"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
AIRLINE = REPO_ROOT.parent / "shared" / "data" / "airline"


@pytest.fixture
def airline() -> Path:
    """The real labelled tweets (never copied into the repository)."""
    if not (AIRLINE / "pool.csv").is_file():
        pytest.skip(f"airline data not found at {AIRLINE}")
    return AIRLINE


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.init()
    yield store
    store.dispose()
