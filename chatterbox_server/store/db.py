"""One database code path for SQLite (one box, any number of processes) and PostgreSQL (many boxes).

SQLite runs in WAL mode with a busy timeout, and every transaction starts with BEGIN IMMEDIATE so
two writers serialize instead of failing half-way. On PostgreSQL the few read-then-write
transactions that must not interleave (claiming a job) take a transaction-level advisory lock.
The schema is versioned with Alembic; `migrate` brings any database to the newest version and is
safe to call from several processes starting at once.

The database is never a start-up dependency: `Database` migrates on first use, and while the
database is down or hung every operation fails within a bounded time (a connect timeout, a
client-side deadline on each operation, then a short fail-fast pause) with `DatabaseUnavailable`,
an SQLAlchemyError the views turn into 503. Speech needs no database and never waits on one.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from chatterbox_server.store.files import flock_exclusive

log = logging.getLogger("chatterbox.db")
T = TypeVar("T")

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


def make_engine(url: str, connect_timeout: float = 5.0) -> Engine:
    if url.startswith("sqlite"):
        # NullPool: a connection per use, so no pooled sqlite handle crosses a fork or a thread
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # libpq's connect_timeout covers the whole connection start (a black-holed host, a stopped
    # postmaster); it takes whole seconds, at least 2. pool_timeout bounds waiting for a free one.
    seconds = max(2, int(round(connect_timeout)))
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=connect_timeout,
                         connect_args={"connect_timeout": seconds})


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


def db_now(conn: Connection) -> float:
    """Now, in UNIX seconds, by the database's clock on PostgreSQL (so leases of runners on several
    boxes compare times from one clock, whatever each box's clock says); SQLite is on this box."""
    if conn.dialect.name == "postgresql":
        return float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
    return time.time()


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
        flock_exclusive(f.fileno())      # closing the file releases it
        yield


def _real_thread_ident() -> int:
    try:
        from gevent import monkey
        return monkey.get_original("_thread", "get_ident")()
    except ImportError:  # pragma: no cover - gevent is a dependency
        return threading.get_ident()


_IMPORTED_ON = _real_thread_ident()       # the front worker's main thread, where its hub runs


class DatabaseUnavailable(SQLAlchemyError):
    """The database did not answer in time, or failed a moment ago and is not tried again yet."""


def _exit_on_timeout() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    if not monkey.is_module_patched("socket"):
        return False
    # on the hub's thread (any greenlet), not in a native thread of its threadpool
    return monkey.get_original("_thread", "get_ident")() == _IMPORTED_ON


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise DatabaseUnavailable if the block runs past `seconds` (under gevent, where psycopg waits
    cooperatively; a hung server answers no byte, and no server-side timeout can help then). The
    gevent.Timeout is not an Exception, so SQLAlchemy invalidates the connection it interrupted."""
    if not seconds or not _exit_on_timeout():
        yield
        return
    import gevent
    timer = gevent.Timeout(seconds)
    timer.start()
    try:
        yield
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise DatabaseUnavailable(f"the database did not answer within {seconds:g} s") from None
    finally:
        timer.close()


class Database:
    """The engine of the stores, made ready (migrated) on first use rather than at boot.

    `operation()` wraps every store call: it migrates when not done yet, bounds the call by
    `timeout`, and after a connection failure fails fast for `pause` seconds, so a dead database
    costs each request that needs it at most one bounded wait, and the others nothing.
    """

    def __init__(self, engine: Engine, lock_dir: str, timeout: float = 10.0, pause: float = 2.0) -> None:
        self.engine = engine
        self.lock_dir = lock_dir
        self.timeout = timeout
        self.pause = pause
        self.ready = False
        self.failed_at: float | None = None
        self.last_error: str | None = None
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.RLock()

    def on_ready(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def _prepare(self) -> None:
        with self._lock:            # gevent patches threading: other greenlets wait here, not on the hub
            if self.ready:
                return
            migrate(self.engine, self.lock_dir)
            for hook in self._hooks:
                hook()
            self.ready = True
            log.info("database ready (%s)", self.engine.dialect.name)

    def availability(self, recent: float = 30.0) -> dict[str, Any]:
        """For /health's `optional`: the database serves long jobs and the request history only."""
        effect = "long jobs and the request history answer 503; speech is served"
        if self.failed_at is not None and time.monotonic() - self.failed_at < recent:
            return {"available": False, "code": "unreachable", "reason": self.last_error, "effect": effect}
        if not self.ready:
            return {"available": None, "code": "not_used_yet",
                    "reason": f"{self.engine.dialect.name}: connects and migrates on first use"}
        return {"available": True, "code": "ready", "reason": self.engine.dialect.name}

    @contextmanager
    def operation(self) -> Iterator[None]:
        if self.failed_at is not None and time.monotonic() - self.failed_at < self.pause:
            raise DatabaseUnavailable(f"the database is unavailable ({self.last_error})")
        try:
            with deadline(self.timeout):
                self._prepare()
                yield
        except SQLAlchemyError as exc:
            if _connection_failure(exc):
                self.failed_at, self.last_error = time.monotonic(), _short(exc)
            raise
        self.failed_at = None


def _connection_failure(exc: SQLAlchemyError) -> bool:
    if isinstance(exc, DatabaseUnavailable):
        return True
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or type(exc).__name__ in (
        "OperationalError", "InterfaceError"))


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def guarded(method: Callable[..., T]) -> Callable[..., T]:
    """A store method that runs inside its store's `database.operation()` (when it has one)."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        database = getattr(self, "database", None)
        if database is None:
            return method(self, *args, **kwargs)
        with database.operation():
            return method(self, *args, **kwargs)
    return wrapper


def guard_methods(cls: type[T]) -> type[T]:
    """Class decorator: every public method of a store runs as one guarded operation."""
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, guarded(value))
    return cls
