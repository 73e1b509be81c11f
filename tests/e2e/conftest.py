"""Real processes on real sockets: `tokenim serve` in a subprocess and the CLI as a user would run it."""

from __future__ import annotations

import json
import os
import queue
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
    printed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def bootstrap_invite(self) -> str:
        for line in self.output:
            if line.startswith("Bootstrap invite"):
                return line.rsplit(" ", 1)[1].strip()
        raise AssertionError(f"no bootstrap invite printed: {self.output}")

    def wait_for_output(self, text: str, timeout: float = 30, *, after: int = 0) -> str:
        """The first line (from line `after` on) printed so far or within `timeout` seconds that contains
        `text`; fails after that, or as soon as the server has exited and everything it printed was read."""
        deadline = time.monotonic() + timeout
        with self.printed:
            while True:
                for line in self.output[after:]:
                    if text in line:
                        return line
                if self.reader is not None and not self.reader.is_alive():
                    try:
                        code = self.process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        raise AssertionError(f"server closed its output without {text!r}: {self.output}") from None
                    raise AssertionError(f"server exited ({code}) without printing {text!r}: {self.output}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"server printed no {text!r} within {timeout} s: {self.output}")
                self.printed.wait(min(left, 1.0))


def start_server(data_dir: Path, *extra: str, port: int | None = None, open_files: int | None = None) -> RunningServer:
    """Start `tokenim serve` (under an open-file limit of `open_files` if given) and wait (30 s at most) until
    it says it is serving and /health answers."""
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
    server = watch_output(RunningServer(f"http://127.0.0.1:{port}", data_dir, proc))
    deadline = time.monotonic() + 30
    try:
        server.wait_for_output("serving", timeout=30)
    except AssertionError:
        proc.kill()
        raise
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not come up: {server.output}")


def watch_output(server: RunningServer) -> RunningServer:
    """Read the process's output in a thread from the start: a test never blocks on a silent server,
    and a chatty one never blocks on a full pipe."""
    server.reader = threading.Thread(target=_drain, args=(server,), daemon=True)
    server.reader.start()
    return server


def _drain(server: RunningServer) -> None:
    stdout = server.process.stdout
    assert stdout is not None
    for line in stdout:
        with server.printed:
            server.output.append(line.rstrip("\n"))
            server.printed.notify_all()
    stdout.close()
    with server.printed:
        server.printed.notify_all()


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
    env: dict[str, str] = field(default_factory=dict)  # more TOKENIM_* settings, e.g. TOKENIM_EXPORT_PASSPHRASE

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
        env["TOKENIM_PASSPHRASE"] = self.passphrase
        env |= self.env
        proc = subprocess.run(
            [*TOKENIM, "--profile", str(self.profile), *args], capture_output=True, text=True, env=env, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tokenim {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    def json(self, *args: str) -> dict[str, object]:
        out = self.run(*args, "--json").stdout
        return json.loads(out)  # type: ignore[no-any-return]


class LineReader:
    """Reads a process's stdout in a thread, so every read has a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def line(self, timeout: float = 30) -> str:
        """The next line, or fail after `timeout` seconds or when the output ends."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line printed within {timeout} s") from None
        if line is None:
            raise AssertionError("the process closed its output")
        return line
