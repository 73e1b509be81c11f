"""`tokenim chat --serve`: the app in a browser on this computer. It listens on 127.0.0.1 only, answers only
under its own address, lets only its own page drive the app, and each page asks for the passphrase (none
is taken from the environment)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.e2e.conftest import TOKENIM, Cli, RunningServer, free_port, start_server, stop_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tokenim chat --serve exited: {proc.communicate()}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("tokenim chat --serve did not listen")


async def first_screen(url: str, origin: str) -> str:
    """Open the page's WebSocket as the page would and read what the app draws until it asks for the passphrase."""
    seen = ""
    async with websockets.connect(url, additional_headers={"Origin": origin}) as ws:
        await ws.send(json.dumps(["resize", {"width": 100, "height": 30}]))
        while "Passphrase of the profile" not in seen:
            frame = await asyncio.wait_for(ws.recv(), 60)
            seen += frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    return seen


def test_the_browser_mode_serves_only_this_computer(open_server: RunningServer, tmp_path: Path) -> None:
    alice = Cli(tmp_path / "alice")
    alice.json("register", "--server", open_server.url, "--username", "alice")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")} | {"TOKENIM_PASSPHRASE": alice.passphrase}
    proc = subprocess.Popen(
        [*TOKENIM, "--profile", str(alice.profile), "chat", "--serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_listening(port, proc)
        here = f"http://127.0.0.1:{port}"
        assert httpx.get(here + "/", timeout=30).status_code == 200
        assert httpx.get(here + "/", headers={"Host": f"evil.example:{port}"}, timeout=30).status_code == 403
        other = socket.gethostbyname(socket.gethostname())
        if not other.startswith("127."):  # nothing listens on this computer's other addresses
            with socket.socket() as s:
                assert s.connect_ex((other, port)) != 0
        with pytest.raises(websockets.InvalidStatus):
            asyncio.run(first_screen(f"ws://127.0.0.1:{port}/ws", "http://evil.example"))
        # The page's own WebSocket starts the app, which asks for the passphrase though one was in the environment.
        asyncio.run(first_screen(f"ws://127.0.0.1:{port}/ws?width=100&height=30", here))
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
