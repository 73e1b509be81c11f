"""`make bench`: starts a real `tokenim serve` on 127.0.0.1 and prints JSON figures.

Raw figures use pre-built ciphertext-shaped content (the server cannot tell the difference); the
`with_encryption` figures go through the SDK, which encrypts with Megolm on every send. Targets
(issue 3) are for one server process on a 2-core machine, with this load generator on the same
machine, competing for the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from tokenim.client import Client, KdfParams
from tokenim.core.clock import SystemClock
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.keys import MEGOLM_ALGORITHM
from tokenim.server.storage.database import PG_SERVER_SETTINGS, SQLITE_SYNCHRONOUS

FAST_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)
PADDING = "A" * 200  # ciphertext of a ~150-byte message is about this long


# The idle-socket figure holds 10,000 WebSockets of one device from one address: lift those two caps
# (the total cap still follows the open-file limit, raised to its hard limit in main()).
BENCH_CONFIG = "max_websockets_per_device = 100000\nmax_connections_per_address = 0\n"


class Server:
    def __init__(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        config = data.parent / "bench.toml"
        config.write_text(BENCH_CONFIG)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokenim",
                "serve",
                "--data",
                str(data),
                "--port",
                str(self.port),
                "--registration",
                "open",
                "--log-level",
                "warning",
                "--config",
                str(config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def register(server: Server, root: Path, name: str) -> Client:
    return await Client.register(root / name, "bench", server_url=server.url, username=name, clock=SystemClock(), kdf=FAST_KDF)


def content(sender: Client, seq: int) -> dict[str, Any]:
    """Megolm-shaped content naming the sending device and its key, as the server requires."""
    return {
        "algorithm": MEGOLM_ALGORITHM,
        "ciphertext": f"{seq}/{PADDING}",  # base64 characters only, as the server requires
        "session_id": "bench",
        "sender_key": sender.keys.info().device_curve25519,
        "device_id": sender.device_id,
    }


async def ws_connect(server: Server, client: Client) -> Any:
    url = server.url.replace("http", "ws", 1) + "/v1/ws"
    ws = await websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {client.account.access_token()}"}, max_size=1 << 20, compression=None
    )
    return ws


async def ws_sync(ws: Any) -> None:
    """Subscribe from the current position: read the backlog until the server says we are synced."""
    await ws.send(json.dumps({"type": "sync", "since": 0, "to_device_after": MAX_POSITION}))
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "synced":
            return
        if frame.get("type") == "error":  # never wait for ever on a refused frame
            raise RuntimeError(frame)


async def bench_http_sequential(server: Server, client: Client, room: str, n: int) -> float:
    headers = {"Authorization": f"Bearer {client.account.access_token()}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        t0 = time.perf_counter()
        for i in range(n):
            r = await http.put(
                f"/v1/rooms/{room}/send/h{secrets.token_hex(6)}",
                json={"type": "m.room.encrypted", "content": content(client, i)},
            )
            r.raise_for_status()
        return n / (time.perf_counter() - t0)


async def ws_sender(
    ws: Any, room: str, sender: Client, n: int, window: int, sent_at: dict[int, float] | None = None, base: int = 0
) -> None:
    """Send n messages over one WebSocket, at most `window` unacknowledged at a time."""
    acked = 0
    inflight = 0
    i = 0
    while acked < n:
        while i < n and inflight < window:
            seq = base + i
            if sent_at is not None:
                sent_at[seq] = time.perf_counter()
            await ws.send(
                json.dumps(
                    {
                        "type": "send",
                        "room_id": room,
                        "txn_id": f"t{seq}-{secrets.token_hex(4)}",
                        "content": content(sender, seq),
                    }
                )
            )
            i += 1
            inflight += 1
        frame = json.loads(await ws.recv())
        if frame["type"] == "sent":
            acked += 1
            inflight -= 1
        elif frame["type"] == "error":
            raise RuntimeError(frame)


async def bench_ws_sequential(server: Server, client: Client, room: str, n: int) -> float:
    ws = await ws_connect(server, client)
    t0 = time.perf_counter()
    await ws_sender(ws, room, client, n, window=1)
    rate = n / (time.perf_counter() - t0)
    await ws.close()
    return rate


async def bench_concurrent(server: Server, senders: list[Client], rooms: list[str], per_sender: int) -> float:
    sockets = [await ws_connect(server, c) for c in senders]
    t0 = time.perf_counter()
    await asyncio.gather(
        *(ws_sender(ws, room, c, per_sender, window=1) for ws, c, room in zip(sockets, senders, rooms, strict=True))
    )
    rate = len(senders) * per_sender / (time.perf_counter() - t0)
    for ws in sockets:
        await ws.close()
    return rate


_MARK = '"ciphertext":"'


async def receiver(ws: Any, expected: int, arrivals: dict[int, float]) -> None:
    """Count our message events; the sequence number is read from the frame text without a JSON parse,
    so the load generator (sharing the two cores with the server) stays cheaper than the server."""
    got = 0
    while got < expected:
        raw = await ws.recv()
        at = raw.find(_MARK)
        if at < 0 or not raw.startswith('{"type":"event"'):
            continue
        start = at + len(_MARK)
        arrivals[int(raw[start : raw.index("/", start)])] = time.perf_counter()
        got += 1


async def bench_latency(server: Server, sender: Client, reader: Client, room: str, rate: int, seconds: float) -> dict[str, float]:
    """Steady `rate` messages/s from one sender; time from send to arrival at another device."""
    n = int(rate * seconds)
    rx = await ws_connect(server, reader)
    await ws_sync(rx)
    tx = await ws_connect(server, sender)
    sent_at: dict[int, float] = {}
    arrivals: dict[int, float] = {}
    recv_task = asyncio.create_task(receiver(rx, n, arrivals))

    async def acks() -> None:
        for _ in range(n):
            frame = json.loads(await tx.recv())
            if frame["type"] == "error":
                raise RuntimeError(frame)

    ack_task = asyncio.create_task(acks())
    start = time.perf_counter()
    for i in range(n):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[i] = time.perf_counter()
        await tx.send(
            json.dumps(
                {
                    "type": "send",
                    "room_id": room,
                    "txn_id": f"l{i}-{secrets.token_hex(4)}",
                    "content": content(sender, i),
                }
            )
        )
    await asyncio.wait_for(asyncio.gather(recv_task, ack_task), 60)
    lat = sorted((arrivals[i] - sent_at[i]) * 1000 for i in range(n))
    await rx.close()
    await tx.close()
    return {
        "rate": rate,
        "messages": n,
        "p50_ms": round(lat[n // 2], 2),
        "p99_ms": round(lat[int(n * 0.99)], 2),
        "max_ms": round(lat[-1], 2),
    }


async def bench_fanout(server: Server, sender: Client, members: list[Client], room: str, n: int) -> dict[str, float]:
    sockets = [await ws_connect(server, m) for m in members]
    for ws in sockets:
        await ws_sync(ws)
    arrivals = [dict[int, float]() for _ in sockets]
    tasks = [asyncio.create_task(receiver(ws, n, arr)) for ws, arr in zip(sockets, arrivals, strict=True)]
    tx = await ws_connect(server, sender)
    sent_at: dict[int, float] = {}
    t0 = time.perf_counter()
    await ws_sender(tx, room, sender, n, window=8, sent_at=sent_at)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    elapsed = max(max(a.values()) for a in arrivals) - t0
    worst = sorted(max(a[i] for a in arrivals) - sent_at[i] for i in range(n))
    for ws in [*sockets, tx]:
        await ws.close()
    return {
        "members": len(members),
        "messages": n,
        "deliveries": n * len(members),
        "deliveries_per_s": round(n * len(members) / elapsed),
        "p99_all_members_ms": round(worst[int(n * 0.99)] * 1000, 2),
    }


async def bench_idle(server: Server, client: Client, count: int) -> dict[str, float]:
    before = server.rss_kib()
    sockets = []
    for _ in range(count):
        try:
            sockets.append(await ws_connect(server, client))
        except OSError:
            break
    await asyncio.sleep(1.0)
    pong = await sockets[-1].send('{"type":"ping"}') if sockets else None
    _ = pong
    held = len(sockets)
    after = server.rss_kib()
    for ws in sockets:
        await ws.close()
    return {
        "requested": count,
        "held": held,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "kib_per_connection": round((after - before) / max(held, 1), 2),
    }


async def bench_login(client: Client, n: int) -> dict[str, float]:
    """Login by key over HTTP: challenge, device signature, tokens (two round trips)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.account.login()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "logins_per_s": round(n / sum(times)),
        "p50_ms": round(times[n // 2] * 1000, 2),
        "p99_ms": round(times[int(n * 0.99)] * 1000, 2),
    }


async def bench_sdk(server: Server, senders: list[Client], rooms: list[str], n_seq: int, per_sender: int) -> dict[str, float]:
    """Sends through the SDK: Megolm encryption, state persisted to the encrypted profile, HTTP PUT."""
    c, room = senders[0], rooms[0]
    await c.messages.send_text(room, "warm-up")
    t0 = time.perf_counter()
    for i in range(n_seq):
        await c.messages.send_text(room, f"sequential {i}")
    seq_rate = n_seq / (time.perf_counter() - t0)
    for s, r in zip(senders, rooms, strict=True):
        await s.messages.send_text(r, "warm-up")

    async def loop(s: Client, r: str) -> None:
        for i in range(per_sender):
            await s.messages.send_text(r, f"concurrent {i}")

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(s, r) for s, r in zip(senders, rooms, strict=True)))
    return {
        "sequential_per_s": round(seq_rate),
        "concurrent_20_per_s": round(len(senders) * per_sender / (time.perf_counter() - t0)),
    }


def bench_fsync(directory: Path, n: int) -> dict[str, Any]:
    """What one durable commit costs on this disk: SQLite runs with synchronous=FULL (an fsync per commit,
    shared by every send the batching writer puts in that commit) and PostgreSQL with synchronous_commit=on."""
    path = directory / "fsync-probe"
    times = []
    with open(path, "wb") as fh:
        for _ in range(n):
            fh.write(b"x" * 4096)
            fh.flush()
            t0 = time.perf_counter()
            os.fsync(fh.fileno())
            times.append(time.perf_counter() - t0)
    path.unlink()
    times.sort()
    return {
        "sqlite_synchronous": SQLITE_SYNCHRONOUS,
        "postgresql": PG_SERVER_SETTINGS,
        "fsync_p50_ms": round(times[n // 2] * 1000, 3),
        "fsync_p99_ms": round(times[int(n * 0.99)] * 1000, 3),
    }


async def main(quick: bool) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scale = 0.2 if quick else 1.0
    results: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "quick": quick}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results["durability"] = bench_fsync(root, int(500 * scale))
        server = Server(root / "data")
        try:
            alice = await register(server, root, "alice")
            bob = await register(server, root, "bob")
            room = (await alice.rooms.direct("@bob")).room_id
            senders = [await register(server, root, f"sender{i}") for i in range(20)]
            rooms = [(await s.rooms.direct("@bob")).room_id for s in senders]
            results["login_by_key"] = await bench_login(alice, int(300 * scale))
            results["send_http_sequential_per_s"] = round(await bench_http_sequential(server, alice, room, int(2000 * scale)))
            results["send_ws_sequential_per_s"] = round(await bench_ws_sequential(server, alice, room, int(3000 * scale)))
            results["send_ws_20_concurrent_per_s"] = round(await bench_concurrent(server, senders, rooms, int(500 * scale)))
            results["latency_at_200_per_s"] = await bench_latency(server, alice, bob, room, 200, 10 * scale)
            members = [await register(server, root, f"member{i}") for i in range(99)]
            group = (await alice.rooms.create("fanout", [m.user_id for m in members])).room_id
            for m in members:
                await m.rooms.join(group)
            results["fanout_100_members"] = await bench_fanout(server, alice, [*members, alice], group, int(300 * scale))
            results["with_encryption"] = await bench_sdk(server, senders, rooms, int(500 * scale), int(50 * scale))
            for c in [alice, bob, *senders, *members]:
                await c.close()
            results["idle_websockets"] = await bench_idle(
                server, await Client.open(root / "bob", "bench", clock=SystemClock()), int(10_000 * scale)
            )
        finally:
            server.stop()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fifth of the load, for a smoke run")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.quick)), indent=2))
