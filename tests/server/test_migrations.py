"""The Alembic migrations build exactly the schema `tables.py` describes, on SQLite and PostgreSQL, and are safe to rerun."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, insert, inspect, select, text
from sqlalchemy.engine import Connection

from tokenim.server.storage.database import MIGRATIONS_DIR, Database
from tokenim.server.storage.tables import metadata, users


def schema_differences(connection: Connection) -> list[Any]:
    """What autogenerate would put in a new migration: types, nullability, indexes, constraints."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


async def current_revision(database: Database) -> str:
    async with database.read() as tx:
        return str((await tx.execute(text("SELECT version_num FROM alembic_version"))).scalar_one())


async def test_the_migrated_schema_matches_the_tables(database: Database) -> None:
    async with database.read() as tx:
        assert await tx.run_sync(schema_differences) == []
        tables = set(await tx.run_sync(lambda conn: inspect(conn).get_table_names()))
    assert tables == set(metadata.tables) | {"alembic_version"}
    assert await current_revision(database) == head_revision()


async def test_migrating_again_is_harmless(database: Database) -> None:
    async with database.write() as tx:
        await tx.execute(
            insert(users).values(user_id="@keep:tokenim.test", username="keep", email=None, is_admin=False, created_at=1)
        )
    await database.migrate()
    await database.migrate()
    assert await current_revision(database) == head_revision()
    async with database.read() as tx:
        assert [r.user_id for r in await tx.execute(select(users.c.user_id))] == ["@keep:tokenim.test"]
        assert await tx.run_sync(schema_differences) == []


async def test_a_second_database_handle_migrates_a_migrated_database(database: Database) -> None:
    """What a restarted server does: a new engine, `migrate()` again on the existing schema."""
    again = Database(database.url)
    try:
        await again.migrate()
        assert await current_revision(again) == head_revision()
        async with again.read() as tx:
            assert await tx.run_sync(schema_differences) == []
    finally:
        await again.close()


async def test_the_comparison_would_notice_a_drift(database: Database) -> None:
    """Guard against a vacuous check: a column in the code but not in the migrations is reported."""
    drifted = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["users"].append_column(Column("nickname", String(64), nullable=True))

    def differences(connection: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(connection), drifted))

    async with database.read() as tx:
        diff = await tx.run_sync(differences)
    assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "users", "nickname")]
