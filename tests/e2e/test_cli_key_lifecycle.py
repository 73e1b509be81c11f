"""Key rotation and revocation from the command line against a real server: Alice rotates her master key
and Bob's `read` shows it as one line while they keep chatting; Alice revokes her second device, and that
device's profile says it was revoked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.test_key_lifecycle import second_device
from tests.conftest import FAST_KDF
from tests.e2e.conftest import Cli, RunningServer, start_server, stop_server
from tokenim.client import Client, ProfileStore
from tokenim.core.clock import SystemClock

pytestmark = pytest.mark.e2e


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


async def _second_profile(first: Cli, path: Path, server_url: str) -> str:
    """A second device of `first`'s user in its own profile directory (as device linking would make it)."""
    async with await Client.open(first.profile, first.passphrase, clock=SystemClock()) as client:
        store = ProfileStore.create(path, first.passphrase, FAST_KDF)
        second = await second_device(client, SystemClock(), None, store, server_url)
        device_id = second.device_id
        await second.close()
    return device_id


def test_rotate_then_revoke(open_server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    for name, cli in [("alice", alice), ("bob", bob)]:
        cli.json("register", "--server", open_server.url, "--username", name)
    assert alice.json("send", "@bob", "hello")["excluded"] == []
    second_id = asyncio.run(_second_profile(alice, tmp_path / "alice2", open_server.url))
    second = Cli(tmp_path / "alice2")

    rotated = alice.run("keys", "rotate").stdout
    assert "version 1 -> 2 (2 devices re-signed)" in rotated and "New fingerprint" in rotated
    assert alice.json("keys", "status")["master_key_version"] == 2

    # Bob sees one line for it in the chat they share, and they keep talking.
    shown = bob.run("read", "@alice").stdout
    assert "-- @alice:localhost rotated their master key (version 2)" in shown and "hello" in shown
    assert bob.json("send", "@alice", "still here")["excluded"] == []
    read = json.loads(alice.run("read", "@bob", "--json").stdout)
    assert [(m.get("event"), m.get("body")) for m in read][-2:] == [("key_rotated", None), (None, "still here")]
    assert [m["body"] for m in json.loads(second.run("read", "@bob", "--json").stdout) if m.get("body")] == ["still here"]

    # Alice revokes the second device; its profile is told so on its next command.
    assert f"Revoked device {second_id}" in alice.run("devices", "revoke", second_id).stdout
    assert alice.json("send", "@bob", "after the revocation")["excluded"] == []
    refused = second.run("read", "@bob", check=False)
    assert refused.returncode == 1 and f"This device ({second_id}) was revoked" in refused.stderr
    as_json = second.run("read", "@bob", "--json", check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"]["code"] == "device_revoked"
    assert "Traceback" not in refused.stderr + as_json.stderr
