"""An acknowledged write is on disk: SQLite fsyncs every commit (synchronous=FULL) on every connection,
and PostgreSQL commits synchronously even when the server's own default says otherwise."""

from __future__ import annotations

from contextlib import AsyncExitStack

from sqlalchemy import text
from sqlalchemy.engine import make_url

from tokenim.server.storage.database import Database, Tx

FULL = 2  # what `PRAGMA synchronous` reads back for FULL (NORMAL is 1)


async def _setting(tx: Tx, db: Database) -> object:
    query = "PRAGMA synchronous" if db.is_sqlite else "SHOW synchronous_commit"
    return (await tx.execute(text(query))).scalar_one()


async def test_every_connection_commits_durably(database: Database) -> None:
    if not database.is_sqlite:
        # The server's default says "don't wait for the disk": the server must not inherit it.
        url = make_url(database.url)
        async with database.write() as tx:
            await tx.execute(text(f'ALTER DATABASE "{url.database}" SET synchronous_commit = off'))
        await database.close()
        database = Database(url.render_as_string(hide_password=False))
    expected = FULL if database.is_sqlite else "on"
    try:
        async with database.write() as tx:
            assert await _setting(tx, database) == expected
        # Several snapshots open at once: each on its own pooled connection, each set up the same way.
        async with AsyncExitStack() as stack:
            reads = [await stack.enter_async_context(database.read()) for _ in range(4)]
            assert [await _setting(tx, database) for tx in reads] == [expected] * 4
            async with database.write() as tx:
                assert await _setting(tx, database) == expected
    finally:
        if not database.is_sqlite:
            async with database.write() as tx:  # leave this worker's database as the next test expects it
                await tx.execute(text(f'ALTER DATABASE "{make_url(database.url).database}" RESET synchronous_commit'))
        await database.close()


async def test_a_commit_that_fails_raises_and_leaves_the_database_usable(database: Database) -> None:
    """COMMIT runs off the event loop on SQLite; when it fails (here a deferred foreign key, checked only at
    COMMIT), the error reaches the caller, nothing of the transaction stays, and the next write works."""
    if not database.is_sqlite:
        return  # PostgreSQL commits through asyncpg; the off-loop commit is SQLite's
    async with database.write() as tx:
        await tx.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await tx.execute(text("CREATE TABLE child (pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"))
    failed = False
    try:
        async with database.write() as tx:
            await tx.execute(text("INSERT INTO child VALUES (42)"))
    except Exception as exc:  # sqlalchemy's IntegrityError
        failed = "FOREIGN KEY" in str(exc)
    assert failed
    async with database.write() as tx:
        await tx.execute(text("INSERT INTO parent VALUES (1)"))
        await tx.execute(text("INSERT INTO child VALUES (1)"))
    async with database.read() as tx:
        assert (await tx.execute(text("SELECT pid FROM child"))).scalars().all() == [1]
