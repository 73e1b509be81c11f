"""`make bench`: benchmarks that print JSON. Targets live here, never in timed unit tests."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tokenim.client import Client, KdfParams
from tokenim.core.clock import SystemClock
from tokenim.server.app import build_app
from tokenim.server.config import ServerConfig
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.storage.database import Database


async def bench_login(n: int = 200) -> dict[str, float]:
    """Logins per second (challenge + signature + tokens) against an in-process server on SQLite."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/server.db")
        await db.migrate()
        config = ServerConfig(registration=RegistrationMode.OPEN, server_name="bench.test")
        transport = httpx.ASGITransport(app=build_app(config, db, SystemClock()))
        client = await Client.register(
            Path(tmp) / "p",
            "pw",
            server_url="http://bench.test",
            username="bench",
            clock=SystemClock(),
            kdf=KdfParams(time_cost=1, memory_kib=8192, parallelism=1),
            transport=transport,
        )
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await client.login()
            times.append(time.perf_counter() - t0)
        await client.close()
        await db.close()
    return {"logins_per_s": round(n / sum(times), 1), "login_p50_ms": round(statistics.median(times) * 1000, 2)}


def main() -> None:
    print(json.dumps({"login": asyncio.run(bench_login())}, indent=2))


if __name__ == "__main__":
    main()
