"""One database code path for SQLite (one box, any number of processes) and PostgreSQL (many boxes).

SQLite runs in WAL mode with a busy timeout, and every transaction starts with BEGIN IMMEDIATE so
two writers serialize instead of failing half-way. On PostgreSQL the few read-then-write
transactions that must not interleave (claiming a job) take a transaction-level advisory lock.
The schema is versioned with Alembic; `migrate` brings any database to the newest version and is
safe to call from several processes starting at once.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
CLAIM_LOCK_ID = 0x43425831          # "CBX1": the advisory lock that serializes job claims
MIGRATE_LOCK_ID = 0x43425830
READ_ONLY = "chatterbox_read_only"


def database_url(configured: str, data_dir: str) -> str:
    if configured:
        return configured.replace("postgresql://", "postgresql+psycopg://", 1).replace(
            "postgres://", "postgresql+psycopg://", 1)
    os.makedirs(data_dir, exist_ok=True)
    return "sqlite:///" + os.path.abspath(os.path.join(data_dir, "chatterbox.db"))


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # NullPool: a connection per use, so no pooled sqlite handle crosses a fork or a thread
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)


def _sqlite_begin(conn: Connection) -> None:
    # readers take no lock in WAL mode; writers take the write lock up front, so two never deadlock
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def reading(engine: Engine) -> Connection:
    """A connection for reads only: `with reading(engine) as conn:`."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def _sqlite_connect(dbapi_connection, _record) -> None:  # noqa: ANN001 - SQLAlchemy event signature
    dbapi_connection.isolation_level = None      # SQLAlchemy's "begin" event issues BEGIN IMMEDIATE
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def serialize(conn: Connection, lock_id: int = CLAIM_LOCK_ID) -> None:
    """Make the rest of this transaction exclusive among instances (SQLite already is)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


def migrate(engine: Engine, lock_dir: str) -> None:
    """Upgrade the schema to the newest version, one process at a time."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    with _file_lock(os.path.join(lock_dir, ".migrate.lock")), engine.begin() as conn:
        serialize(conn, MIGRATE_LOCK_ID)
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
