"""Files end to end: a large file is streamed (never whole in memory, on either side), checked and
decrypted; size limits give a clear error; a changed blob is refused."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.e2e.conftest import RunningServer, start_server, stop_server
from tokenim.client import Client
from tokenim.core.clock import SystemClock
from tokenim.core.errors import TokenIMError

pytestmark = pytest.mark.e2e
MIB = 1024 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _pair(srv: RunningServer, root: Path) -> tuple[Client, Client, str]:
    alice = await Client.register(
        root / "alice", PASSPHRASE, server_url=srv.url, username="alice", clock=SystemClock(), kdf=FAST_KDF
    )
    bob = await Client.register(root / "bob", PASSPHRASE, server_url=srv.url, username="bob", clock=SystemClock(), kdf=FAST_KDF)
    return alice, bob, (await alice.rooms.direct("@bob")).room_id


def test_large_file_streams_through_both_sides(tmp_path: Path) -> None:
    size = 96 * MIB
    src = tmp_path / "big.bin"
    with src.open("wb") as fh:
        for _ in range(size // MIB):
            fh.write(os.urandom(MIB))
    srv = start_server(tmp_path / "data", "--registration", "open")
    peak_server = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak_server[0] = max(peak_server[0], _rss_kib(srv.process.pid))
            time.sleep(0.02)

    try:

        async def scenario() -> None:
            alice, bob, room = await _pair(srv, tmp_path)
            base_server = _rss_kib(srv.process.pid)
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            tracemalloc.start()
            sent = await alice.files.send(room, src)
            await bob.messages.sync()
            out = tmp_path / "copy.bin"
            info = await bob.files.download(sent.event_id, out)
            _, peak_client = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            stop.set()
            watcher.join()
            assert info["size"] == size and info["name"] == "big.bin"
            assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
            # Neither side ever held the file: both stay far below its 96 MiB.
            assert peak_client < 24 * MIB, f"client peaked at {peak_client / MIB:.1f} MiB"
            assert (peak_server[0] - base_server) * 1024 < 32 * MIB, (
                f"server grew by {(peak_server[0] - base_server) / 1024:.1f} MiB"
            )
            blobs = list((srv.data_dir / "blobs").iterdir())
            assert len(blobs) == 1 and blobs[0].stat().st_size > size  # ciphertext: chunks carry tags
            await alice.close()
            await bob.close()

        asyncio.run(scenario())
    finally:
        stop.set()
        stop_server(srv)


def test_upload_limit_and_tampered_blob(tmp_path: Path) -> None:
    (tmp_path / "cfg.toml").write_text("max_upload_bytes = 200000\n")
    srv = start_server(tmp_path / "data", "--registration", "open", "--config", str(tmp_path / "cfg.toml"))
    try:

        async def scenario() -> None:
            alice, bob, room = await _pair(srv, tmp_path)
            big = tmp_path / "too-big.bin"
            big.write_bytes(os.urandom(300_000))
            with pytest.raises(TokenIMError) as err:
                await alice.files.send(room, big)
            assert err.value.code.value == "body_too_large" and "200000" in err.value.message
            assert not any(p.name.startswith(".upload") for p in (srv.data_dir / "blobs").iterdir())

            small = tmp_path / "note.txt"
            small.write_bytes(b"meeting notes " * 1000)
            sent = await alice.files.send(room, small)
            await bob.messages.sync()
            (blob,) = [p for p in (srv.data_dir / "blobs").iterdir() if not p.name.startswith(".")]
            data = bytearray(blob.read_bytes())
            data[100] ^= 1
            blob.write_bytes(bytes(data))
            out = tmp_path / "out.txt"
            with pytest.raises(TokenIMError) as err:
                await bob.files.download(sent.event_id, out)
            assert "does not match its hash" in err.value.message
            assert not out.exists()
            await alice.close()
            await bob.close()

        asyncio.run(scenario())
    finally:
        stop_server(srv)
