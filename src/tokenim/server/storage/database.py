"""The database handle: an async SQLAlchemy engine for SQLite or PostgreSQL, transactions, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tokenim.core.errors import ErrorCode, TokenIMError

Tx = AsyncConnection
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def async_url(url: str) -> str:
    """Map `sqlite:///…` and `postgresql://…` to the async drivers (aiosqlite, asyncpg)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"'{url}' is not a database URL (sqlite:///PATH or postgresql://…).") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise TokenIMError(ErrorCode.BAD_CONFIG, f"Unsupported database '{backend}': use sqlite:///PATH or postgresql://….")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Database:
    """Owns the engine. `write()` gives one transaction; on SQLite writers are serialised in-process."""

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=10)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self._prepare_sqlite_file()
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    def _prepare_sqlite_file(self) -> None:
        path = make_url(self.url).database
        if path and path != ":memory:" and not Path(path).exists():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """One read-write transaction, committed when the block ends without error."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A connection for reads only."""
        async with self.engine.connect() as conn:
            yield conn

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        """Release every pooled connection."""
        await self.engine.dispose()


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
