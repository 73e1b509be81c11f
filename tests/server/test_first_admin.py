"""With open registration, the first account becomes the admin: exactly one, however many register at once,
and however many server instances share the database."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.server.test_keys import registration_with_keys
from tokenim.core.clock import FakeClock
from tokenim.server.app import build_app
from tokenim.server.config import ServerConfig
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import users

N = 10


async def test_simultaneous_first_registrations_make_exactly_one_admin(
    database: Database, app: FastAPI, config: ServerConfig, clock: FakeClock
) -> None:
    # On PostgreSQL, a second instance with its own engine: no in-process lock is shared between the two.
    other_db = None if database.is_sqlite else Database(database.url)
    apps = [app] if other_db is None else [app, build_app(config, other_db, clock)]
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://tokenim.test") for a in apps]
    try:
        bodies = [registration_with_keys(f"first{i}", clock, 1)[1] for i in range(N)]
        answers = await asyncio.gather(
            *(clients[i % len(clients)].post("/v1/register", json=body) for i, body in enumerate(bodies))
        )
        assert [a.status_code for a in answers] == [200] * N, [a.text for a in answers]
        assert sum(a.json()["is_admin"] for a in answers) == 1
        async with database.read() as tx:
            admins = (await tx.execute(select(func.count()).select_from(users).where(users.c.is_admin))).scalar_one()
        assert admins == 1
        # Later registrations never become admin either.
        late = await clients[-1].post("/v1/register", json=registration_with_keys("late", clock, 1)[1])
        assert late.status_code == 200 and late.json()["is_admin"] is False
    finally:
        for c in clients:
            await c.aclose()
        if other_db is not None:
            await other_db.close()
