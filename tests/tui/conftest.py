"""The terminal app against a real server in this process: the test's ASGI app served by uvicorn on
127.0.0.1 (the app's live connection is the SDK's WebSocket, which needs a socket), users made with the
SDK, and Textual's pilot to drive the app as a person would.

These tests exercise the app, not the database: they run on SQLite only (a copy of the session's migrated
template), which keeps each one's set-up to about a second."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from pathlib import Path

import httpx
import pytest
import uvicorn
from textual.pilot import Pilot

from tests.conftest import FAST_KDF, PASSPHRASE
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.server.app import build_app, build_services
from tokenim.server.config import ServerConfig
from tokenim.server.storage.database import Database
from tokenim.tui import ChatApp, NotifyMode

SIZE = (120, 36)


class LiveServer:
    """The test's server app, served by uvicorn on a fixed port of 127.0.0.1; it can be stopped and started
    again on the same port (the app's offline banner and reconnection)."""

    def __init__(self, app: object) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.sock.fileno() == -1:
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", ws_ping_interval=None)  # type: ignore[arg-type]
        server = uvicorn.Server(config)
        self.server = server
        self.task = asyncio.create_task(server.serve(sockets=[self.sock]))
        await until(lambda: server.started, "the server to start")

    async def stop(self) -> None:
        assert self.server is not None and self.task is not None
        self.server.should_exit = True
        self.server.force_exit = True  # WebSockets stay open otherwise
        await asyncio.wait_for(self.task, 15)
        self.sock.close()


@pytest.fixture
async def live_server(tmp_path: Path, sqlite_template: Path, clock: FakeClock, config: ServerConfig) -> AsyncIterator[LiveServer]:
    """The server (the suite's `config`), on SQLite, listening on 127.0.0.1 in this event loop."""
    shutil.copyfile(sqlite_template, tmp_path / "server.db")
    db = Database(f"sqlite:///{tmp_path / 'server.db'}")
    live = LiveServer(build_app(config, db, clock, build_services(config, db, clock)))
    await live.start()
    yield live
    if live.server is not None and not live.server.should_exit:
        await live.stop()
    await db.close()


@pytest.fixture
def live_url(live_server: LiveServer) -> str:
    return live_server.url


LiveUser = Callable[..., Awaitable[Client]]


@pytest.fixture
async def live_user(tmp_path: Path, live_url: str, clock: FakeClock) -> AsyncIterator[LiveUser]:
    """Register a user on the live server, with a profile of their own."""
    made: list[Client] = []

    async def make(username: str, transport: httpx.AsyncBaseTransport | None = None) -> Client:
        client = await Client.register(
            tmp_path / f"profile-{username}",
            PASSPHRASE,
            server_url=live_url,
            username=username,
            clock=clock,
            kdf=FAST_KDF,
            transport=transport,
        )
        made.append(client)
        return client

    yield make
    for c in made:
        await c.close()


def chat_app(client: Client, **kwargs: object) -> ChatApp:
    """The app as a test drives it: times in UTC, the room list asked for often, a fake notify-send."""
    options: dict[str, object] = {"tz": UTC, "room_poll_s": 0.2, "notify": NotifyMode.DESKTOP, "notify_command": "notify-send"}
    options.update(kwargs)
    return ChatApp(client, **options)  # type: ignore[arg-type]


async def until(condition: Callable[[], object], what: str, timeout: float = 15) -> None:
    """Wait (without a fixed sleep) until `condition()` is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_screen(pilot: Pilot[None], text: str, timeout: float = 15) -> str:
    """Wait until `text` is on the screen; returns the screen as text."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause()
        shown = screen_text(pilot.app)
        if text in shown:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} did not appear on the screen:\n{shown}")
        await asyncio.sleep(0.05)  # drawing the whole screen as text costs: not too often


async def told(app: ChatApp, text: str, timeout: float = 15) -> str:
    """Wait until the app has said (in a notification) something containing `text`; returns it."""
    found: list[str] = []
    await until(lambda: found.extend(s for s in app.said if text in s) or found, f"the app to say {text!r}", timeout)
    return found[0]


def screen_text(app: object) -> str:
    """What the screen shows, as plain text (what a person reads; also the snapshots' format)."""
    import io

    from rich.console import Console

    assert isinstance(app, ChatApp)
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)
