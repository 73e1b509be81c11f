"""The database handle: SQLite (embedded) or PostgreSQL, one transaction interface for both, migrations.

PostgreSQL runs on asyncpg through SQLAlchemy's async engine. SQLite runs on the standard `sqlite3`
driver *inline on the event loop*: a statement on a WAL database takes microseconds, while handing
each one to aiosqlite's thread costs ~85 µs raw and ~400 µs through SQLAlchemy (measured here), which
capped the server at a few hundred messages per second. Writers are serialised by an asyncio lock,
so a transaction never interleaves with another on the same file. Only COMMIT, which waits for an
fsync, runs in a thread, so the loop keeps taking requests while the disk flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, CursorResult, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.base import Executable

from tokenim.core.errors import ErrorCode, TokenIMError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
T = TypeVar("T")
SQLITE_SYNCHRONOUS = "FULL"
# PostgreSQL: a commit returns only once it is flushed to the WAL on disk, whatever the server's default.
PG_SERVER_SETTINGS = {"synchronous_commit": "on"}


BeforeCommit = Callable[["Tx"], Awaitable[None]]


class Tx:
    """One open transaction. Stores call `await tx.execute(statement)` whatever the database."""

    __slots__ = ("_async", "_before_commit", "_sync")

    def __init__(self, *, sync: Connection | None = None, async_: AsyncConnection | None = None) -> None:
        self._sync = sync
        self._async = async_
        self._before_commit: dict[str, BeforeCommit] = {}

    def before_commit(self, key: str, hook: BeforeCommit) -> BeforeCommit:
        """Run `hook(tx)` as the transaction's last work before COMMIT, once per `key`: the first hook given
        for a key is kept and returned. The audit chain is extended there, so its lock is taken last and
        held only until the commit: no transaction waits for another lock while holding it (no deadlock)."""
        return self._before_commit.setdefault(key, hook)

    async def _finish(self) -> None:
        for hook in list(self._before_commit.values()):
            await hook(self)

    @property
    def dialect_name(self) -> str:
        """`sqlite` or `postgresql`: for the few statements the two spell differently (an upsert)."""
        conn = self._sync if self._sync is not None else self._async
        assert conn is not None
        return str(conn.dialect.name)

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        if self._sync is not None:
            return self._sync.execute(statement, parameters)
        assert self._async is not None
        return await self._async.execute(statement, parameters)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: an exception inside rolls back to here and propagates."""
        if self._sync is not None:
            with self._sync.begin_nested():
                yield
            return
        assert self._async is not None
        async with self._async.begin_nested():
            yield

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        if self._sync is not None:
            return fn(self._sync)
        assert self._async is not None
        return await self._async.run_sync(fn)


AfterRollback = Callable[["Tx"], Awaitable[None]]


class RefusalWithRecord(Exception):
    """Mixed into an error whose trace must outlive the transaction it ends (a wrong two-factor code: the
    change is refused and rolled back, but the failure is counted and audited). `after_rollback` is written in
    a transaction of its own once the refused one has rolled back (or, for a job of the event writer, in the
    batch after the job's savepoint rolled back), once."""

    after_rollback: AfterRollback | None = None


def take_record(exc: BaseException) -> AfterRollback | None:
    """The record an exception carries, taken off it so that it is written only once."""
    if not isinstance(exc, RefusalWithRecord) or exc.after_rollback is None:
        return None
    record, exc.after_rollback = exc.after_rollback, None
    return record


def normalise_url(url: str) -> tuple[str, str]:
    """(backend, SQLAlchemy URL): `sqlite:///…` stays on pysqlite, `postgresql://…` goes to asyncpg."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"'{url}' is not a database URL (sqlite:///PATH or postgresql://…).") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return "sqlite", parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return "postgresql", parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise TokenIMError(ErrorCode.BAD_CONFIG, f"Unsupported database '{backend}': use sqlite:///PATH or postgresql://….")


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit transactions are too lazy).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is fsynced before it returns, so what the server acknowledges survives a power loss or
    # an OS crash, not only a crash of the process (NORMAL). The batching writer spreads one fsync over
    # every send in a batch; `make bench` reports the cost.
    cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


async def _off_loop(fn: Callable[[], None]) -> None:
    """Run `fn` in a thread and wait for it to end, even if the caller is cancelled meanwhile (the
    connection must not be used again before it has), then re-raise the cancellation."""
    done = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await done
        raise


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


class Database:
    """Owns the engine. `write()` gives one transaction (serialised on SQLite); `read()` a snapshot."""

    def __init__(self, url: str, *, debug_commit_delay_ms: int = 0) -> None:
        self.backend, self.url = normalise_url(url)
        # Tests only (the `debug_commit_delay_ms` setting): a slow disk, so acknowledging early would show.
        self._commit_delay = debug_commit_delay_ms / 1000
        self.is_sqlite = self.backend == "sqlite"
        self.sync_engine: Engine | None = None
        self.engine: AsyncEngine | None = None
        if self.is_sqlite:
            self._prepare_sqlite_file()
            self.sync_engine = create_engine(self.url, connect_args={"check_same_thread": False}, pool_size=5, max_overflow=20)
            event.listen(self.sync_engine, "connect", _sqlite_connect)
            event.listen(self.sync_engine, "begin", _sqlite_begin)
        else:
            self.engine = create_async_engine(
                self.url, pool_size=10, max_overflow=10, connect_args={"server_settings": PG_SERVER_SETTINGS}
            )
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._write_conn: Connection | None = None  # SQLite: one connection for all writes, kept open

    def _prepare_sqlite_file(self) -> None:
        path = make_url(self.url).database
        if path and path != ":memory:" and not Path(path).exists():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """One read-write transaction, committed when the block ends without error. An error that carries a
        record (`RefusalWithRecord`) has it written in a transaction of its own after the rollback."""
        try:
            async with self._write() as tx:
                yield tx
        except RefusalWithRecord as exc:
            record = take_record(exc)
            if record is not None:
                async with self._write() as tx:
                    await record(tx)
            raise

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Tx]:
        if self.sync_engine is not None:
            assert self._write_lock is not None
            async with self._write_lock:
                if self._write_conn is None or self._write_conn.closed:
                    self._write_conn = self.sync_engine.connect()
                trans = self._write_conn.begin()
                try:
                    tx = Tx(sync=self._write_conn)
                    yield tx
                    await tx._finish()
                    if self._commit_delay:
                        await asyncio.sleep(self._commit_delay)
                except BaseException:
                    trans.rollback()
                    raise
                # COMMIT waits for an fsync (synchronous=FULL): run it off the event loop, so requests keep
                # arriving meanwhile and the writer's next batch grows (one fsync shared by more sends).
                # The write lock is held until it returns, so nothing else touches this connection.
                try:
                    await _off_loop(trans.commit)
                except BaseException:
                    # A failed COMMIT (disk full, a deferred constraint) can leave SQLite inside the transaction:
                    # drop the connection (closing it rolls back) and open a fresh one for the next write.
                    conn, self._write_conn = self._write_conn, None
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                        conn.close()
                    raise
            return
        assert self.engine is not None
        async with self.engine.begin() as aconn:
            tx = Tx(async_=aconn)
            yield tx
            await tx._finish()
            if self._commit_delay:
                await asyncio.sleep(self._commit_delay)

    @contextlib.asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[Tx]:
        """A transaction for reads. On SQLite it always sees one snapshot (WAL); on PostgreSQL each statement
        sees what was committed when it began, unless `snapshot` asks for one view for the whole transaction
        (REPEATABLE READ: a walk over many pages sees no row that arrived meanwhile)."""
        if self.sync_engine is not None:
            with self.sync_engine.connect() as conn:
                yield Tx(sync=conn)
            return
        assert self.engine is not None
        async with self.engine.connect() as aconn:
            if snapshot:
                aconn = await aconn.execution_options(isolation_level="REPEATABLE READ")
            yield Tx(async_=aconn)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        async with self.write() as tx:
            await tx.run_sync(_upgrade)

    async def close(self) -> None:
        """Release every pooled connection."""
        if self._write_conn is not None:
            self._write_conn.close()
        if self.sync_engine is not None:
            self.sync_engine.dispose()
        if self.engine is not None:
            await self.engine.dispose()


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
