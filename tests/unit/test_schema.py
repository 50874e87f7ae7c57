"""The migrations build exactly the schema the models declare (a column or index added to a
model without its migration would exist in tests' fresh tables but not in users' stores)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from store import Store


def test_the_migrated_schema_is_the_models_schema(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.init()
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    finally:
        store.dispose()
    assert diff == []
