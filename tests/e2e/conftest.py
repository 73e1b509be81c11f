"""Real processes on real sockets: `tokenim serve` in a subprocess and the CLI as a user would run it."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

TOKENIM = [sys.executable, "-m", "tokenim"]


def free_port() -> int:
    """A free port below the kernel's ephemeral range: a server restarted on it can't find it taken by
    some client's outgoing connection in the meantime (a port from bind(0) could be)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    while True:
        port = rng.randrange(10_000, min(low, 32_000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class RunningServer:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def bootstrap_invite(self) -> str:
        for line in self.output:
            if line.startswith("Bootstrap invite"):
                return line.rsplit(" ", 1)[1].strip()
        raise AssertionError(f"no bootstrap invite printed: {self.output}")


def start_server(data_dir: Path, *extra: str, port: int | None = None, open_files: int | None = None) -> RunningServer:
    """Start `tokenim serve` (under an open-file limit of `open_files` if given) and wait until /health answers."""
    port = port or free_port()

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    proc = subprocess.Popen(
        [*TOKENIM, "serve", "--data", str(data_dir), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")},
        preexec_fn=limit_open_files if open_files is not None else None,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", data_dir, proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"server exited early: {server.output}")
        server.output.append(line.rstrip("\n"))
        if "serving" in line:
            break
    # Keep draining the output so a chatty server never blocks on a full pipe.
    server.reader = threading.Thread(target=_drain, args=(proc, server.output), daemon=True)
    server.reader.start()
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not come up: {server.output}")


def _drain(proc: subprocess.Popen[str], output: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line.rstrip("\n"))
    proc.stdout.close()


def kill_server(server: RunningServer, sig: int = signal.SIGTERM) -> str:
    """Stop the server with `sig` (SIGKILL: no chance to clean up) and return all it printed."""
    if server.process.poll() is None:
        server.process.send_signal(sig)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if server.reader is not None:
        server.reader.join(timeout=10)
    return "\n".join(server.output)


def stop_server(server: RunningServer) -> str:
    return kill_server(server)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_server(tmp_path / "server-data")
    yield srv
    stop_server(srv)


@dataclass
class Cli:
    """Runs `tokenim` for one profile, with the passphrase from the environment."""

    profile: Path
    passphrase: str = "e2e passphrase"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
        env["TOKENIM_PASSPHRASE"] = self.passphrase
        proc = subprocess.run(
            [*TOKENIM, "--profile", str(self.profile), *args], capture_output=True, text=True, env=env, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tokenim {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    def json(self, *args: str) -> dict[str, object]:
        out = self.run(*args, "--json").stdout
        return json.loads(out)  # type: ignore[no-any-return]
