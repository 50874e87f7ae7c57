"""The store's engine, sessions, schema and the helpers every aggregate shares."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, func, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, ProgrammingError, StatementError
from sqlmodel import Session, select

from store.db import make_engine, redact_url
from store.errors import DatabaseUnavailable, StoreError
from store.fence import active as active_fence
from store.fence import check as check_fence
from store.models import (
    Chat,
)

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Rows per write transaction: short transactions keep SQLite writers from locking each other out.
WRITE_CHUNK = 500


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def migration_scripts() -> ScriptDirectory:
    """This release's migrations (what ``init`` upgrades to)."""
    return ScriptDirectory.from_config(_alembic_config())


class StoreBase:
    """Owns the engine. Methods open short sessions; nothing here holds a transaction open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        # a store dropped without dispose() still closes its pooled connections (an SQLite
        # connection left to the garbage collector is a ResourceWarning from Python 3.13 on)
        # (only then: at exit a forked worker child must not close its parent's connections)
        weakref.finalize(self, self.engine.dispose).atexit = False

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A short session; inside :func:`store.fence.fenced` its commits are fenced."""
        fence = active_fence()
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                if fence is not None and fence.store_url == self.url:
                    event.listen(session, "before_commit", lambda s: check_fence(s, fence))
                yield session
        except OperationalError as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailable(
                    f"database unreachable at {self.safe_url} (SENTILOOP_DATABASE_URL): "
                    f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
                ) from exc
            if is_missing_schema(exc):
                raise self._no_schema() from exc
            raise
        except ProgrammingError as exc:  # PostgreSQL's missing table or column
            if is_missing_schema(exc):
                raise self._no_schema() from exc
            raise

    def _no_schema(self) -> StoreError:
        return StoreError(
            f"the store at {self.safe_url} has no schema yet, or an older one than this "
            "release: run `sentiloop init`"
        )

    # -- schema -------------------------------------------------------------------------------

    def init(self) -> None:
        """Create or upgrade the schema to the newest migration (safe to run repeatedly)."""
        cfg = _alembic_config()
        with self._reaching(), self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def schema_state(self) -> tuple[str | None, str]:
        """The revision the database is at (None before ``init``) and the newest one this
        release knows; reads only."""
        head = migration_scripts().get_current_head()
        assert head is not None, "the migrations have one head"
        with self._reaching(), self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision(), head

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailable(
                    f"database unreachable at {self.safe_url} (SENTILOOP_DATABASE_URL): {exc.orig}"
                ) from exc
            raise

    def check(self) -> None:
        """Fail fast with a clear error when the database is unreachable or not initialised."""
        with self.session() as s:
            try:
                s.exec(select(func.count()).select_from(Chat)).one()
            except OperationalError as exc:
                if is_connection_error(exc):
                    raise
                raise self._no_schema() from exc

    # -- helpers ------------------------------------------------------------------------------

    def _insert_ignore(self, model: type[Any], keys: list[str], where: Any = None) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING RETURNING the key of each row written: with
        many rows, RETURNING is the count every driver gets right (psycopg's rowcount is not).
        ``where`` names a partial unique index's condition."""
        table = model.__table__
        pk = next(iter(table.primary_key.columns))
        stmt: Any
        if self.engine.dialect.name == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing(
                index_elements=keys, index_where=where
            )
        elif self.engine.dialect.name == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(
                index_elements=keys, index_where=where
            )
        else:
            return insert(table).prefix_with("IGNORE")
        return stmt.returning(pk)

    def _unavailable(self, exc: Exception) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"database busy or unreachable at {self.safe_url} (SENTILOOP_DATABASE_URL): "
            f"{db_reason(exc)}"
        )


def rowcount(result: Any) -> int:
    """Rows an insert-or-ignore actually wrote (a CursorResult; typed loosely by SQLAlchemy)."""
    if result.returns_rows:
        return len(result.all())
    return max(int(result.rowcount or 0), 0)


#: What a write of one bad row can raise: the database refusing it (DBAPIError), or the
#: driver failing to send it (StatementError wraps what binding raised, or that raw error).
ROW_ERRORS = (StatementError, UnicodeError, ValueError)


def is_transient(exc: BaseException) -> bool:
    """A busy (locked) or unreachable database: the row is fine, try again later."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig or exc).lower()
    return is_connection_error(exc) or "locked" in text or "busy" in text


def db_reason(exc: BaseException) -> str:
    """Why the database refused a row, in one line and without the row's values (SQLAlchemy's
    own message ends with the statement and its parameters: customer text)."""
    orig = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    if isinstance(orig, UnicodeError):
        first = "text that cannot be encoded"
    return f"{type(orig).__name__}: {first[:200]}" if first else type(orig).__name__


def is_missing_schema(exc: StatementError) -> bool:
    """A table or column the query needs is not there: the store was never initialised, or
    not upgraded to this release (SQLite: "no such table"; PostgreSQL: UndefinedTable)."""
    text = f"{type(exc.orig).__name__} {exc.orig}".lower() if exc.orig else str(exc).lower()
    return any(
        s in text for s in ("no such table", "no such column", "undefinedtable", "undefinedcolumn")
    )


def is_connection_error(exc: OperationalError) -> bool:
    text = str(exc.orig or exc).lower()
    return any(
        s in text
        for s in (
            "connection refused",
            "could not connect",
            "unable to open",
            "connection failed",
            "timeout expired",
            "name or service not known",
            "no such host",
        )
    )
