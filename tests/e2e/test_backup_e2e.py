"""The key backup from the command line: alice chats, backs up, and a new device of hers restores the backup
and reads the history from before it existed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FAST_KDF
from tests.e2e.conftest import TOKENIM, Cli, RunningServer, start_server, stop_server
from tests.support import add_device, insides
from tokenim.client import Client, ProfileStore
from tokenim.core.clock import FakeClock, SystemClock

pytestmark = pytest.mark.e2e


def second_device_profile(first: Cli, profile: Path) -> None:
    """A new device of the user of `first` (same master key), added by the first device, in its own profile."""

    async def make() -> None:
        async with await Client.open(first.profile, first.passphrase, clock=SystemClock()) as client:
            clock = FakeClock(SystemClock().now_ms())
            identity = await add_device(client, clock)
            server_url, server_name = insides(client).store.get_meta("server_url"), client.server_name
        store = ProfileStore.create(profile, first.passphrase, FAST_KDF)
        try:
            now = str(clock.now_ms())
            store.set_meta(
                {"server_url": server_url or "", "server_name": server_name, "user_id": identity.user_id}
                | {"device_id": identity.device_id, "master_key_version": "1", "master_created_at": now}
                | {"device_created_at": now}
            )
            store.set_secrets(
                {"master_seed": identity.master.seed(), "olm_account": identity.pickle_account(store.pickle_key).encode()}
            )
        finally:
            store.close()

    asyncio.run(make())


def run_with(cli: Cli, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
    return subprocess.run(
        [*TOKENIM, "--profile", str(cli.profile), *args],
        capture_output=True,
        text=True,
        env=base | {"TOKENIM_PASSPHRASE": cli.passphrase} | env,
        timeout=60,
    )


@pytest.fixture
def open_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


def test_a_new_device_restores_the_backup_and_reads_old_history(open_server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    alice.json("register", "--server", open_server.url, "--username", "alice")
    bob.json("register", "--server", open_server.url, "--username", "bob")
    alice.json("send", "@bob", "before the new device")
    bob.run("read", "@alice")
    bob.json("send", "@alice", "bob answers, also before")
    alice.run("read", "@bob")  # takes bob's room key

    created = alice.json("backup", "create")
    key = str(created["recovery_key"])
    assert created["keys"] == 2 and [len(group) for group in key.split(" ")] == [4] * 13
    status = alice.json("backup", "status")
    assert status["exists"] and status["backs_up"] and status["keys"] == 2

    laptop = Cli(tmp_path / "alice-laptop", alice.passphrase)
    second_device_profile(alice, laptop.profile)
    laptop.json("login")
    typo = key[:7] + ("2" if key[7] != "2" else "3") + key[8:]
    refused = run_with(laptop, {"TOKENIM_RECOVERY_KEY": typo}, "backup", "restore", "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"]["code"] == "bad_recovery_key"

    restored = run_with(laptop, {"TOKENIM_RECOVERY_KEY": key}, "backup", "restore")
    assert restored.returncode == 0, restored.stderr
    assert "Restored 2 new room keys" in restored.stdout
    messages = json.loads(laptop.run("read", "@bob", "--json").stdout)
    assert [(m["body"], m["sender"]) for m in messages] == [
        ("before the new device", "@alice:localhost"),
        ("bob answers, also before", "@bob:localhost"),
    ]
    assert "backs up its new room keys" in laptop.run("backup", "status").stdout
