"""Consistent copies of the store and putting them back: SQLite through its online backup
API, PostgreSQL through ``pg_dump``/``pg_restore``.

A snapshot also returns what it holds (schema revision, model versions), read from the
snapshot itself (SQLite) or from the very database snapshot that ``pg_dump`` saves
(PostgreSQL), so the caller copies exactly the checkpoints that snapshot references.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath

from sqlalchemy import Connection, create_engine, delete, func, inspect, update
from sqlalchemy import text as sa_text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel, col, select

from store.base import migration_scripts
from store.db import normalise_url
from store.errors import StoreError
from store.models import Chat, CheckpointIntent, Lease, ModelVersion
from store.store import Store

__all__ = [
    "StoreSnapshot",
    "copy_sqlite",
    "dump_postgres",
    "forget_processes",
    "has_data",
    "kind",
    "known_revision",
    "place_sqlite",
    "relocate_checkpoints",
    "restore_postgres",
    "snapshot_sqlite",
    "sqlite_file",
]

#: libpq reads these from the environment; SQLAlchemy URLs carry them as query parameters.
_PG_QUERY_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}


@dataclass(frozen=True)
class StoreSnapshot:
    """What a snapshot holds: its schema revision and model versions."""

    kind: str
    revision: str | None
    versions: list[ModelVersion]

    @property
    def production(self) -> int | None:
        return next((v.number for v in self.versions if v.status == "production"), None)


def kind(store: Store) -> str:
    """``sqlite`` or ``postgresql``."""
    return store.engine.dialect.name


def sqlite_file(store: Store) -> Path:
    database = make_url(normalise_url(store.url)).database
    if not database or database == ":memory:":
        raise StoreError(f"{store.safe_url} is not a SQLite file")
    return Path(database)


def has_data(store: Store) -> bool:
    """Whether the store holds chats or model versions (False when it has no schema yet)."""
    if kind(store) == "sqlite" and not sqlite_file(store).exists():
        return False
    with store.session() as s:  # an unreachable database is a DatabaseUnavailable
        if not inspect(s.connection()).has_table("chat"):
            return False
        chats = s.exec(select(func.count()).select_from(Chat)).one()
        versions = s.exec(select(func.count()).select_from(ModelVersion)).one()
    return bool(chats or versions)


def known_revision(revision: str) -> bool:
    """Whether this code's migrations know ``revision`` (a newer one cannot be upgraded)."""
    from alembic.util import CommandError

    try:
        return migration_scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _read(conn: Connection, what: str) -> StoreSnapshot:
    revision = None
    if inspect(conn).has_table("alembic_version"):
        revision = conn.execute(sa_text("SELECT version_num FROM alembic_version")).scalar()
    with Session(bind=conn) as s:
        versions = list(s.exec(select(ModelVersion).order_by(col(ModelVersion.number))).all())
    return StoreSnapshot(what, revision, versions)


def copy_sqlite(src: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database into a new file ``dest``, private (0600)
    from its creation: SQLite's online backup API, so writers may go on meanwhile. The copy
    is left in rollback-journal mode, one self-contained file. Raises sqlite3.Error."""
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    source, target = sqlite3.connect(src, timeout=30), sqlite3.connect(dest)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()


def snapshot_sqlite(store: Store, dest: Path) -> StoreSnapshot:
    """Copy the SQLite store to ``dest`` (created 0600) with the online backup API: a
    consistent copy while workers keep writing. The copy is left in rollback-journal mode
    so it is one self-contained file."""
    try:
        copy_sqlite(sqlite_file(store), dest)
    except sqlite3.Error as exc:
        raise StoreError(f"could not copy the SQLite store {store.safe_url}: {exc}") from exc
    engine = create_engine(f"sqlite:///{dest}")
    try:
        with engine.connect() as conn:
            return _read(conn, "sqlite")
    finally:
        engine.dispose()


def place_sqlite(src: Path, store: Store) -> None:
    """Put a snapshot in place of the store's file atomically (a copy renamed over it);
    the old file's WAL and shared-memory files go first, or SQLite would replay them
    into the new one. Nothing may have the store open meanwhile."""
    target = sqlite_file(store)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore-{uuid.uuid4().hex}")
    store.dispose()
    try:
        with src.open("rb") as fin, tmp.open("xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        tmp.chmod(0o600)
        for side in ("-wal", "-shm", "-journal"):
            target.with_name(target.name + side).unlink(missing_ok=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pg_command(tool: str, store: Store) -> tuple[list[str], dict[str, str]]:
    """The tool's connection options and environment. The password travels in PGPASSWORD,
    never on a command line that ``ps`` shows."""
    exe = shutil.which(tool)
    if exe is None:
        raise StoreError(
            f"{tool} is not on PATH: backing up or restoring the PostgreSQL store "
            f"{store.safe_url} needs the PostgreSQL client tools (pg_dump, pg_restore) of "
            "the server's major version or newer"
        )
    url = make_url(normalise_url(store.url))
    args = [exe]
    if url.host:
        args += ["--host", url.host]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    if not url.database:
        raise StoreError(f"{store.safe_url} names no database (SENTILOOP_DATABASE_URL)")
    args += ["--dbname", url.database]
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    for key, var in _PG_QUERY_ENV.items():
        value = url.query.get(key)
        if isinstance(value, str):
            env[var] = value
    return args, env


def _run_pg(args: list[str], env: dict[str, str], store: Store, what: str) -> None:
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise StoreError(f"could not run {PurePath(args[0]).name}: {exc}") from exc
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        raise StoreError(f"{what} {store.safe_url} failed: {detail}")


def dump_postgres(store: Store, dest: Path) -> StoreSnapshot:
    """``pg_dump --format=custom`` of the database into ``dest`` (created 0600), taken from
    the same transaction snapshot that the returned versions are read from."""
    args, env = _pg_command("pg_dump", store)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            exported = conn.execute(sa_text("SELECT pg_export_snapshot()")).scalar_one()
            held = _read(conn, "postgresql")
            _run_pg(
                [*args, "--format=custom", f"--snapshot={exported}", "--file", str(dest)],
                env,
                store,
                "pg_dump of",
            )
    return held


def restore_postgres(src: Path, store: Store) -> None:
    """Replace the database's sentiloop tables with a ``pg_dump`` archive. The tables are
    dropped first so that a newer schema's extra tables do not clash with the migrations
    that follow; ``pg_restore --clean --if-exists`` then recreates what the archive holds."""
    args, env = _pg_command("pg_restore", store)
    with store.engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(sa_text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
        conn.execute(sa_text("DROP TABLE IF EXISTS alembic_version"))
    store.dispose()
    _run_pg(
        [
            *args,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            str(src),
        ],
        env,
        store,
        "pg_restore into",
    )


def forget_processes(store: Store) -> None:
    """Drop the rows that describe running processes of the installation the snapshot was
    taken from (leases, checkpoint intents): none of them runs here, and an intent from
    there must never lead to deleting a directory here."""
    with store.session() as s:
        s.execute(delete(CheckpointIntent))
        s.execute(delete(Lease))
        s.commit()


def relocate_checkpoints(store: Store, models_dir: Path) -> int:
    """Point every version's ``checkpoint_path`` into ``models_dir`` (same directory name)
    and return how many rows changed: restoring into another home keeps them valid."""
    changed = 0
    with store.session() as s:
        rows = s.exec(select(ModelVersion.number, ModelVersion.checkpoint_path)).all()
        for number, path in rows:
            wanted = str(models_dir / PurePath(path).name)
            if wanted != path:
                s.exec(
                    update(ModelVersion)
                    .where(col(ModelVersion.number) == number)
                    .values(checkpoint_path=wanted)
                )
                changed += 1
        s.commit()
    return changed
