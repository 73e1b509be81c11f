"""The Alembic migrations build exactly the schema the code uses; configuration sources and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tokenim.core.errors import TokenIMError
from tokenim.server.config import Config, load_config
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import metadata


async def test_migrations_match_the_tables_and_run_twice(database: Database) -> None:
    await database.migrate()  # already at head: nothing happens

    def diff(connection):  # type: ignore[no-untyped-def]
        return compare_metadata(MigrationContext.configure(connection), metadata)

    async with database.read() as tx:
        assert await tx.run_sync(diff) == []


def test_config_sources_in_order(tmp_path: Path) -> None:
    assert load_config(config_file=None, env={}, flags={}) == Config()
    toml = tmp_path / "tokenim.toml"
    toml.write_text('port = 9000\nserver_name = "chat.example.com"\nregistration = "open"\n')
    cfg = load_config(config_file=str(toml), env={"TOKENIM_PORT": "9100"}, flags={"host": "0.0.0.0"})
    assert (cfg.server.port, cfg.server.server_name, cfg.server.registration, cfg.server.host) == (
        9100,
        "chat.example.com",
        RegistrationMode.OPEN,
        "0.0.0.0",
    )
    cfg = load_config(config_file=None, env={"TOKENIM_CONFIG": str(toml)}, flags={"port": "9200"})
    assert cfg.server.port == 9200 and cfg.server.server_name == "chat.example.com"
    assert cfg.database_url.startswith("sqlite:///") and cfg.database_url.endswith("tokenim-data/tokenim.db")


@pytest.mark.parametrize(
    ("env", "flags", "file_text", "words"),
    [
        ({}, {"port": "abc"}, None, "port"),
        ({}, {"port": "70000"}, None, "port"),
        ({"TOKENIM_REGISTRATION": "maybe"}, {}, None, "registration"),
        ({"TOKENIM_SHOE_SIZE": "42"}, {}, None, "Unknown setting"),
        ({}, {}, "colour = 'blue'\n", "Unknown setting 'colour'"),
        ({}, {}, "port = [", "not valid TOML"),
        ({}, {"server_name": "bad name!"}, None, "server_name"),
        ({}, {"log_level": "loud"}, None, "log_level"),
    ],
)
def test_bad_config_is_one_clear_error(
    tmp_path: Path, env: dict[str, str], flags: dict[str, str], file_text: str | None, words: str
) -> None:
    path = None
    if file_text is not None:
        path = tmp_path / "c.toml"
        path.write_text(file_text)
    with pytest.raises(TokenIMError) as err:
        load_config(config_file=str(path) if path else None, env=env, flags=flags)
    assert err.value.code.value == "bad_config" and words in err.value.message and "\n" not in err.value.message


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(TokenIMError) as err:
        load_config(config_file=str(tmp_path / "missing.toml"), env={}, flags={})
    assert "Cannot read the config file" in err.value.message


def test_invite_codes_are_typeable_and_never_look_like_an_option() -> None:
    import re

    from tokenim.server.services.accounts import new_invite_code

    codes = {new_invite_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(re.fullmatch(r"([A-HJ-NP-Z2-9]{4}-){5}[A-HJ-NP-Z2-9]{4}", c) for c in codes)
