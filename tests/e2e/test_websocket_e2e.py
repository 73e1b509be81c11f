"""The WebSocket on a real server: sessions end at logout and device removal, odd frames get errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.e2e.conftest import RunningServer, start_server, stop_server
from tokenim.client import Client
from tokenim.core.clock import SystemClock

pytestmark = pytest.mark.e2e


@pytest.fixture
def open_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


async def _connect(srv: RunningServer, client: Client) -> websockets.ClientConnection:
    url = srv.url.replace("http", "ws", 1) + "/v1/ws"
    return await websockets.connect(url, additional_headers={"Authorization": f"Bearer {client.account.access_token()}"})


async def _closed_code(ws: websockets.ClientConnection) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def test_logout_and_device_removal_close_live_sockets_and_frames_are_checked(open_server: RunningServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await Client.register(
            tmp_path / "alice", PASSPHRASE, server_url=open_server.url, username="alice", clock=SystemClock(), kdf=FAST_KDF
        )
        ws = await _connect(open_server, alice)
        await ws.send(b"\x00binary")
        assert json.loads(await ws.recv())["error"]["code"] == "bad_json"
        await ws.send("[" * 100_000 + "]" * 100_000)
        assert json.loads(await ws.recv())["error"]["code"] in ("bad_json", "body_too_large")
        await ws.send(json.dumps({"type": "sync", "since": 2**70}))
        assert json.loads(await ws.recv())["error"]["code"] == "invalid_request"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}

        await alice.account.logout()
        assert await _closed_code(ws) == 4401

        await alice.account.login()
        ws = await _connect(open_server, alice)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await alice.devices.remove(alice.device_id)
        assert await _closed_code(ws) == 4401
        await alice.close()

    asyncio.run(scenario())


def test_a_browser_authenticates_the_websocket_with_subprotocols(open_server: RunningServer, tmp_path: Path) -> None:
    """Browsers cannot set Authorization on a WebSocket: `tokenim.v1, tokenim.bearer.<token>` does the same."""
    url = open_server.url.replace("http", "ws", 1) + "/v1/ws"

    async def scenario() -> None:
        alice = await Client.register(
            tmp_path / "alice", PASSPHRASE, server_url=open_server.url, username="alice", clock=SystemClock(), kdf=FAST_KDF
        )
        protocols = ["tokenim.v1", f"tokenim.bearer.{alice.account.access_token()}"]
        ws = await websockets.connect(url, subprotocols=protocols)  # type: ignore[list-item]
        assert ws.subprotocol == "tokenim.v1"  # the token is never echoed back
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.close()

        bad = await websockets.connect(url, subprotocols=["tokenim.v1", "tokenim.bearer.not-a-token"])  # type: ignore[list-item]
        assert bad.subprotocol == "tokenim.v1"
        frame = json.loads(await bad.recv())
        assert frame["type"] == "error" and frame["error"]["code"] == "unauthorized"
        assert await _closed_code(bad) == 4401
        await alice.close()

    asyncio.run(scenario())
