"""Connections on real sockets: incomplete requests time out with 408, caps per address, per device
(WebSockets) and in total answer at once with a clear status, and a server under a low open-file limit
keeps answering instead of hanging. Limits and timeouts are made small through the config file."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import websockets

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.e2e.conftest import RunningServer, start_server, stop_server
from tokenim.client import Client
from tokenim.core.clock import SystemClock

pytestmark = pytest.mark.e2e

HEAD = b"GET /health HTTP/1.1\r\nHost: tokenim.test\r\n"  # a request head without its closing blank line


def _config(tmp_path: Path, **settings: object) -> str:
    path = tmp_path / "limits.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return str(path)


@contextmanager
def _server(tmp_path: Path, open_files: int | None = None, **settings: object) -> Iterator[RunningServer]:
    srv = start_server(
        tmp_path / "data", "--registration", "open", "--config", _config(tmp_path, **settings), open_files=open_files
    )
    try:
        yield srv
    finally:
        stop_server(srv)


def _connect(srv: RunningServer, source: str = "127.0.0.1") -> socket.socket:
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((host, int(port)))
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one whole response (status, headers, body); fails if none comes within the socket's timeout."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the body"
        body += chunk
    return int(lines[0].split()[1]), headers, body[: int(headers.get("content-length", 0))]


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _error(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def test_incomplete_requests_time_out_with_408(tmp_path: Path) -> None:
    with _server(tmp_path, header_timeout_seconds=1, body_timeout_seconds=1) as srv, ExitStack() as stack:
        silent = stack.enter_context(_connect(srv))  # sends nothing at all
        half_heads = [stack.enter_context(_connect(srv)) for _ in range(20)]
        for sock in half_heads:
            sock.sendall(HEAD)
        stalled_body = stack.enter_context(_connect(srv))
        stalled_body.sendall(b'POST /v1/register HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"user')
        # After a complete request on a kept-alive connection, the next head gets the same deadline.
        second_head = stack.enter_context(_connect(srv))
        second_head.sendall(HEAD + b"\r\n")
        assert _response(second_head)[0] == 200
        second_head.sendall(HEAD)
        # A body that keeps arriving, slower in total than the timeout but never silent for that long, is served.
        steady = stack.enter_context(_connect(srv))
        body = b'{"username": "nobody"}'
        steady.sendall(b"POST /v1/login/challenge HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
        steady.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 6):
            time.sleep(0.3)  # pacing this client, not waiting for the server
            steady.sendall(body[i : i + 6])
        status, _, _ = _response(steady)
        assert status != 408
        for sock in [silent, *half_heads, stalled_body, second_head]:
            status, _, answer = _response(sock)
            assert (status, _error(answer)) == (408, "request_timeout")
            assert _closed(sock)


def test_caps_per_address_and_in_total_answer_at_once(tmp_path: Path) -> None:
    with _server(tmp_path, max_connections=12, max_connections_per_address=8) as srv, ExitStack() as stack:
        held = [stack.enter_context(_connect(srv)) for _ in range(8)]
        for sock in held:
            sock.sendall(HEAD)  # accepted and waiting for the rest of its head
        ninth = stack.enter_context(_connect(srv))
        status, headers, body = _response(ninth)
        assert (status, _error(body), headers["retry-after"]) == (429, "too_many_connections", "5")
        assert _closed(ninth)
        held += [stack.enter_context(_connect(srv, "127.0.0.2")) for _ in range(4)]  # another address: room left
        for sock in held[8:]:
            sock.sendall(HEAD)
        over = stack.enter_context(_connect(srv, "127.0.0.3"))
        status, headers, body = _response(over)
        assert (status, _error(body), headers["retry-after"]) == (503, "server_busy", "5")
        # The held connections were really accepted: each finishes its request and is answered.
        for sock in (held[0], held[-1]):
            sock.sendall(b"\r\n")
            assert _response(sock)[0] == 200
        # A closed connection frees its place.
        held[0].close()
        deadline = time.monotonic() + 10
        while True:
            with _connect(srv, "127.0.0.3") as again:
                again.sendall(HEAD + b"\r\n")
                if _response(again)[0] == 200:
                    break
            assert time.monotonic() < deadline, "a closed connection never freed its place"
            time.sleep(0.05)


def test_websockets_per_device_are_capped_with_close_code_4429(tmp_path: Path) -> None:
    with _server(tmp_path, max_websockets_per_device=2, max_connections=8) as srv:

        async def scenario() -> None:
            alice = await Client.register(
                tmp_path / "alice", PASSPHRASE, server_url=srv.url, username="alice", clock=SystemClock(), kdf=FAST_KDF
            )
            url = srv.url.replace("http", "ws", 1) + "/v1/ws"
            headers = {"Authorization": f"Bearer {alice.account.access_token()}"}
            first = await websockets.connect(url, additional_headers=headers)
            second = await websockets.connect(url, additional_headers=headers)
            third = await websockets.connect(url, additional_headers=headers)
            frame = json.loads(await asyncio.wait_for(third.recv(), 10))
            assert frame["type"] == "error" and frame["error"]["code"] == "too_many_connections"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(third.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
            # The two allowed ones still work, and closing one makes room again.
            await second.send('{"type":"ping"}')
            assert json.loads(await asyncio.wait_for(second.recv(), 10)) == {"type": "pong"}
            await first.close()
            deadline = time.monotonic() + 10
            while True:
                again = await websockets.connect(url, additional_headers=headers)
                await again.send('{"type":"ping"}')
                if json.loads(await asyncio.wait_for(again.recv(), 10)).get("type") == "pong":
                    break
                await again.close()
                assert time.monotonic() < deadline, "a closed WebSocket never freed its place"
                await asyncio.sleep(0.05)
            await again.close()
            await second.close()
            # A closed WebSocket leaves the total count too: more sockets in turn than the cap of 8 all open.
            for _ in range(12):
                ws = await websockets.connect(url, additional_headers=headers)
                await ws.send('{"type":"ping"}')
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
                await ws.close()
            await alice.close()

        asyncio.run(scenario())


def test_idle_connections_under_a_low_open_file_limit_never_stop_the_server_answering(tmp_path: Path) -> None:
    """256 open files: the cap is derived below it, and whatever comes beyond the cap is told 503 at once."""
    with _server(tmp_path, open_files=256, max_connections_per_address=0) as srv, ExitStack() as stack:
        socks = [stack.enter_context(_connect(srv)) for _ in range(300)]
        for sock in socks:
            sock.sendall(HEAD)
        for sock in socks:
            sock.settimeout(0.05)
        refused = []
        for sock in socks:
            try:
                refused.append(_response(sock))
            except TimeoutError:
                continue  # accepted, waiting for the rest of its head
        accepted = len(socks) - len(refused)
        assert accepted == 256 - 64, accepted  # the derived cap: 64 files kept for the database and blobs
        assert {(status, _error(body)) for status, _, body in refused} == {(503, "server_busy")}
        for sock in socks:
            sock.close()
        deadline = time.monotonic() + 10
        while True:
            with _connect(srv) as again:
                again.sendall(HEAD + b"\r\n")
                if _response(again)[0] == 200:
                    return
            assert time.monotonic() < deadline, "the server never recovered"
            time.sleep(0.05)
