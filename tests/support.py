"""Helpers shared by the security tests: the one way past the SDK's public surface (`insides`), a second
device of a user, a server that lies in its answers, and a raw ASGI WebSocket session driven step by step
(so the fake clock can move between frames)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tokenim.client import Client
from tokenim.client.state import DeviceState
from tokenim.client.stores import Store
from tokenim.client.transport import Transport
from tokenim.core.clock import FakeClock
from tokenim.core.ids import DeviceId, new_device_id
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.machine import CryptoMachine
from tokenim.protocol.api import OkResponse

Rewrite = Callable[[httpx.Request, Any], Any]


@dataclass(frozen=True, slots=True)
class Insides:
    """What a test reaches past the public SDK for, and only what it cannot do through it: to play a
    tampering server or a forked profile, send raw requests as a device, or look at the stored state."""

    state: DeviceState
    transport: Transport

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def machine(self) -> CryptoMachine:
        return self.state.machine

    @property
    def identity(self) -> DeviceIdentity:
        return self.state.identity


def insides(client: Client) -> Insides:
    """The one door from a test into a client's private parts (state, crypto machine, store, transport)."""
    return Insides(client._state, client._transport)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_auth(client: Client) -> dict[str, str]:
    token = client.account.access_token()
    return bearer(token)


async def add_device(client: Client, clock: FakeClock, device_id: str | None = None) -> DeviceIdentity:
    """Another device of `client`'s user, signed by the same master key, added through POST /v1/devices."""
    now = clock.now_ms()
    second = DeviceIdentity.create(
        client.user_id, DeviceId(device_id or new_device_id()), now, master=insides(client).identity.master
    )
    upload = second.keys_to_upload(0, need_fallback=True)
    body = {
        "device_keys": second.device_keys_object(now),
        "one_time_keys": upload.one_time_keys,
        "fallback_keys": upload.fallback_keys,
    }
    await insides(client).transport.post("/v1/devices", body, OkResponse)
    second.mark_keys_as_published()
    return second


async def login_token(http: httpx.AsyncClient, identity: DeviceIdentity) -> str:
    """Log `identity` in over HTTP by signing the server's challenge; returns the access token."""
    ident = {"user_id": identity.user_id, "device_id": identity.device_id}
    challenge = (await http.post("/v1/login/challenge", json=ident)).json()
    signature = identity.sign_login_challenge(server_name=challenge["server_name"], nonce=challenge["nonce"])
    resp = await http.post("/v1/login", json={**ident, "nonce": challenge["nonce"], "signature": signature})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


class LyingServer(httpx.AsyncBaseTransport):
    """Passes requests to the real server, and lets a test rewrite the JSON answers of chosen paths:
    what a malicious or compromised server could send. Records every path asked for."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.rewrites: dict[str, Rewrite] = {}
        self.requests: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        response = await self.inner.handle_async_request(request)
        rewrite = self.rewrites.get(request.url.path)
        if rewrite is None or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        return httpx.Response(200, json=rewrite(request, body))


def websocket_scope(token: str) -> dict[str, Any]:
    """The ASGI scope of a WebSocket upgrade to /v1/ws with `token`, for driving the app in process."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/v1/ws",
        "raw_path": b"/v1/ws",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"tokenim.test"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("tokenim.test", 80),
        "subprotocols": [],
        "state": {},
    }


class WebSocketSession:
    """A raw ASGI WebSocket to /v1/ws in this event loop: the test sends frames one at a time and reads
    what came back, so it can move the fake clock in between. Every wait has a deadline."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str) -> None:
        self._app = app
        self._token = token
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WebSocketSession:
        scope = websocket_scope(self._token)
        await self._inbox.put({"type": "websocket.connect"})
        self._task = asyncio.get_running_loop().create_task(self._app(scope, self._inbox.get, self._send))
        self._task.add_done_callback(lambda _task: self._changed.set())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        if not self._task.done():
            await self._inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self._task, 10)

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            self.frames.append(json.loads(message["text"]))
        elif message["type"] == "websocket.close":
            self.close_code = int(message.get("code", 1000))
        self._changed.set()

    async def send(self, frame: dict[str, Any]) -> None:
        await self._inbox.put({"type": "websocket.receive", "text": json.dumps(frame)})

    async def wait_for(self, done: Callable[[], bool], timeout: float = 10) -> None:
        """Wait until `done()` holds, or fail after `timeout` seconds with what was received."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                if done():
                    return
                if self._task is not None and self._task.done():
                    raise AssertionError(f"the socket ended first: frames {self.frames}, close {self.close_code}")
                await self._changed.wait()

    async def ended(self, timeout: float = 10) -> None:
        """Wait until the server has finished with the socket."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
