"""Shared fixtures: a database per test (SQLite, and PostgreSQL when configured), a fake clock,
an in-process server, and `alice`/`bob`/`carol` clients with their own profiles."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import settings
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.mail_kit import Mailbox, SmsGateway, SmtpServer
from tokenim.client import Client, KdfParams
from tokenim.core.clock import FakeClock
from tokenim.server.app import build_app, build_services
from tokenim.server.config import EmailConfig, ServerConfig
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.storage.database import Database

PG_URL = os.environ.get("TOKENIM_TEST_DATABASE_URL")

# Property tests: the same examples on every CI run (a failure there reproduces exactly); locally they
# explore, and remember failures in .hypothesis/. HYPOTHESIS_PROFILE=ci runs the CI way anywhere.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev"))
# Cheap Argon2id parameters keep tests fast; the default parameters are tested once on their own.
FAST_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)
PASSPHRASE = "correct horse battery staple"


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


def pytest_configure(config: pytest.Config) -> None:
    """Under CI the PostgreSQL half of the suite is never silently dropped."""
    if not PG_URL and os.environ.get("CI") == "true":
        raise pytest.UsageError(
            "CI=true but TOKENIM_TEST_DATABASE_URL is not set: PostgreSQL could not be reached or set up "
            "(see scripts/postgres-for-tests.sh). The suite must run on both databases under CI."
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which databases ran and how many tests each, loudly when PostgreSQL was left out."""
    counts = {"sqlite": 0, "postgresql": 0}
    for key in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(key, []):
            if getattr(report, "when", "call") != "call" and key != "error":
                continue
            nodeid = getattr(report, "nodeid", "")
            for backend in counts:
                if f"[{backend}" in nodeid or f"-{backend}]" in nodeid or f"-{backend}-" in nodeid:
                    counts[backend] += 1
    line = f"databases: sqlite ran {counts['sqlite']} tests, postgresql ran {counts['postgresql']} tests"
    if not PG_URL:
        line = f"databases: SQLITE ONLY ({counts['sqlite']} tests); PostgreSQL was not available, its variants did not run"
    terminalreporter.write_line(line, yellow=not PG_URL, bold=True)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file, made once per session: copying it costs a millisecond, migrating
    a fresh file about 0.2 s, and there is one database per test (mutation testing runs them thousands of times)."""
    path = tmp_path_factory.mktemp("template") / "server.db"

    async def migrate() -> None:
        db = Database(f"sqlite:///{path}")
        await db.migrate()
        await db.close()

    asyncio.run(migrate())
    assert not [p for p in path.parent.iterdir() if p != path], "the template must be one file (no WAL left over)"
    return path


@pytest.fixture(params=_backends())
async def database(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Database]:
    """A migrated, empty database (on SQLite, a copy of the session's migrated template)."""
    if request.param == "sqlite":
        shutil.copyfile(sqlite_template, tmp_path / "server.db")
        db = Database(f"sqlite:///{tmp_path / 'server.db'}")
    else:
        db = Database(await _fresh_pg_database())
        await db.migrate()
    yield db
    await db.close()


async def _fresh_pg_database() -> str:
    """Reset this worker's PostgreSQL database to an empty public schema."""
    assert PG_URL
    worker = re.sub(r"[^a-z0-9]", "", os.environ.get("PYTEST_XDIST_WORKER", "main"))
    base = make_url(PG_URL)
    name = f"{base.database}_{worker}"
    admin = Database(PG_URL)
    assert admin.engine is not None
    async with admin.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        exists = (await conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})).first()
        if not exists:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.close()
    url = base.set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    async with db.write() as tx:
        await tx.execute(text("DROP SCHEMA public CASCADE"))
        await tx.execute(text("CREATE SCHEMA public"))
    await db.close()
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    """An open server whose data directory (blobs, the server key) is the test's own."""
    (tmp_path / "server-data").mkdir()
    return ServerConfig(registration=RegistrationMode.OPEN, server_name="tokenim.test", data_dir=tmp_path / "server-data")


@pytest.fixture
def app(config: ServerConfig, database: Database, clock: FakeClock):  # type: ignore[no-untyped-def]
    return build_app(config, database, clock, build_services(config, database, clock))


@pytest.fixture
def transport(app) -> httpx.ASGITransport:  # type: ignore[no-untyped-def]
    return httpx.ASGITransport(app=app)


@pytest.fixture
async def http(transport: httpx.ASGITransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=transport, base_url="http://tokenim.test") as client:
        yield client


MakeUser = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_user(tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock) -> AsyncIterator[MakeUser]:
    """Register a user with a fresh profile on the in-process server."""
    made: list[Client] = []

    async def make(username: str, **kwargs: object) -> Client:
        client = await Client.register(
            tmp_path / f"profile-{username}",
            PASSPHRASE,
            server_url="http://tokenim.test",
            username=username,
            clock=clock,
            kdf=FAST_KDF,
            transport=transport,
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(client)
        return client

    yield make
    for c in made:
        await c.close()


@pytest.fixture
async def alice(make_user: MakeUser) -> Client:
    return await make_user("alice")


@pytest.fixture
async def bob(make_user: MakeUser) -> Client:
    return await make_user("bob")


@pytest.fixture
async def carol(make_user: MakeUser) -> Client:
    return await make_user("carol")


# ---- outside servers: SMTP and an SMS gateway (tests/mail_kit.py) --------------------------------


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, one per session; tests take `mailbox`."""
    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture
def mailbox(smtp_server: SmtpServer) -> Mailbox:
    """The session's SMTP server's mailbox, emptied for this test."""
    smtp_server.mailbox.clear()
    return smtp_server.mailbox


@pytest.fixture
def email_config(smtp_server: SmtpServer) -> EmailConfig:
    """An `[email]` section sending to the session's SMTP server, in clear (it is on loopback)."""
    return EmailConfig(smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_from="TokenIM <tokenim@tokenim.test>")


@pytest.fixture(scope="session")
def sms_gateway_server() -> Iterator[SmsGateway]:
    gateway = SmsGateway()
    yield gateway
    gateway.stop()


@pytest.fixture
def sms_gateway(sms_gateway_server: SmsGateway) -> SmsGateway:
    """A local HTTP server standing in for the SMS provider, its record emptied for this test."""
    sms_gateway_server.clear()
    return sms_gateway_server
