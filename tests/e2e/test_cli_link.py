"""Linking a new device from the command line, two real processes against a real server: `devices link` waits
with a code, `devices approve CODE` in another profile approves it, and the new device reads the old history."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENIM, Cli, LineReader, RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


def test_a_device_linked_with_a_code_reads_old_history(open_server: RunningServer, tmp_path: Path) -> None:
    alice, bob, new = Cli(tmp_path / "alice"), Cli(tmp_path / "bob"), Cli(tmp_path / "alice-laptop")
    alice.json("register", "--server", open_server.url, "--username", "alice")
    bob.json("register", "--server", open_server.url, "--username", "bob")
    alice.json("send", "@bob", "before the laptop existed")

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")} | {"TOKENIM_PASSPHRASE": new.passphrase}
    args = ["--profile", str(new.profile), "devices", "link", "--server", open_server.url, "--username", "alice", "--json"]
    errors = tmp_path / "link-stderr.txt"
    with (
        errors.open("w") as stderr,
        subprocess.Popen([*TOKENIM, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env) as waiting,
    ):
        lines = LineReader(waiting)
        invitation = json.loads(lines.line(timeout=60))
        assert invitation["user_id"] == "@alice:localhost" and len(invitation["code"]) == 16
        assert not new.profile.exists()  # nothing is written before the approval

        try:
            approved = alice.json("devices", "approve", invitation["code"])
            assert approved["master_key_sent"] is True and approved["room_keys"] >= 1
            linked = json.loads(lines.line(timeout=60))
            assert waiting.wait(timeout=60) == 0, errors.read_text()
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait(timeout=10)
    assert linked["linked"] is True and linked["device_id"] == approved["approved"]
    assert linked["fingerprint"] == alice.json("keys", "show")["fingerprint"]
    messages = json.loads(new.run("read", "@bob", "--json").stdout)
    assert [m["body"] for m in messages] == ["before the laptop existed"]
    new.json("send", "@bob", "from the laptop")
    assert "from the laptop" in bob.run("read", "@alice").stdout
    # The code works once.
    again = alice.run("devices", "approve", invitation["code"], check=False)
    assert again.returncode == 1 and "used" in again.stderr
