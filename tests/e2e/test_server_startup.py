"""`tokenim serve` refuses to start, with one clear line and before announcing anything, when its port is
taken or another server runs on its data directory; a refused start changes nothing (the first server's
bootstrap invite still works)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENIM, Cli, free_port, start_server, stop_server

pytestmark = pytest.mark.e2e


def _serve(data: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOKENIM, "serve", "--data", str(data), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")},
    )


def _refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The run ended at once with one line on stderr and nothing announced; that line."""
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Bootstrap invite" not in proc.stdout and "serving" not in proc.stdout, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_taken_port_is_reported_before_any_invite_is_printed(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        port = holder.getsockname()[1]
        line = _refused(_serve(tmp_path / "data", port))
    assert line == f"tokenim serve: cannot listen on 127.0.0.1:{port}: the port is already in use."


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    try:
        line = _refused(_serve(data, free_port()))
        assert line.startswith(f"tokenim serve: another server (process {first.process.pid}) is already running")
        assert str(data) in line
        # The refused start revoked nothing: the invite the first server printed still registers the admin.
        alice = Cli(tmp_path / "alice")
        reg = alice.json("register", "--server", first.url, "--username", "alice", "--invite", first.bootstrap_invite)
        assert reg["is_admin"] is True
    finally:
        stop_server(first)
    # Once the first server has stopped, the directory is free again.
    again = start_server(data)
    stop_server(again)
