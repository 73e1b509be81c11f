"""/openapi.json is the contract: Schemathesis (`--checks all`, every route) against a real server finds nothing.

Authenticated routes are exercised with a real access token. `POST /v1/logout` ends the session it is
called with, so it runs in its own pass with a token of its own. Runs on SQLite (every phase) and, when
configured, on PostgreSQL (the coverage phase: the boundary values, NULs and huge numbers, are where the
databases differ), in parallel under xdist: about 40 s on 2 cores.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAST_KDF, PASSPHRASE, PG_URL, _fresh_pg_database
from tests.e2e.conftest import RunningServer, start_server, stop_server
from tokenim.client import Client
from tokenim.core.clock import SystemClock

ST = str(Path(sys.executable).with_name("st"))
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(params=["sqlite", "postgresql"] if PG_URL else ["sqlite"])
def contract_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RunningServer, list[str]]]:
    extra, phases = ["--registration", "open"], ["--phases", "coverage,fuzzing,stateful"]
    if request.param == "postgresql":
        extra += ["--database", asyncio.run(_fresh_pg_database())]
        phases = ["--phases", "coverage"]
    srv = start_server(tmp_path / "server-data", *extra)
    yield srv, phases
    stop_server(srv)


def _token(server: RunningServer, profile: Path, username: str) -> str:
    async def register() -> str:
        client = await Client.register(
            profile, PASSPHRASE, server_url=server.url, username=username, clock=SystemClock(), kdf=FAST_KDF
        )
        try:
            return client.account.access_token()
        finally:
            await client.close()

    return asyncio.run(register())


def _schemathesis(server: RunningServer, token: str, workdir: Path, *args: str) -> None:
    cmd = [ST, "--config-file", str(CONFIG), "run", f"{server.url}/openapi.json", "--checks", "all"]
    cmd += ["-H", f"Authorization: Bearer {token}", "--workers", "1", "--max-examples", "5", "--seed", "1"]
    cmd += ["--output-truncate=true", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
    # Run in a scratch folder: Schemathesis keeps state (.schemathesis/, .hypothesis/) in its working directory.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110, env=env, cwd=workdir)
    assert proc.returncode == 0, f"Schemathesis found failures:\n{proc.stdout[-12000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and "Runtime Error" not in proc.stdout, proc.stdout[-3000:]


def test_every_route_keeps_the_openapi_contract(contract_server: tuple[RunningServer, list[str]], tmp_path: Path) -> None:
    server, phases = contract_server
    _schemathesis(server, _token(server, tmp_path / "p1", "alice"), tmp_path, *phases, "--exclude-path", "/v1/logout")
    _schemathesis(server, _token(server, tmp_path / "p2", "bob"), tmp_path, *phases, "--include-path", "/v1/logout")
