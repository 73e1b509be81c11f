"""The key lifecycle end to end, through the CLI against a real server, on both databases: register, chat,
back up, rotate, export the master key, import it into a new profile, restore the backup there, read the
old history, revoke the old device, and the old profile is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_URL, _fresh_pg_database
from tests.e2e.conftest import Cli, RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

FILE_PASS = "a long export passphrase for the walk"


@pytest.fixture(params=["sqlite", "postgresql"])
def walk_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    extra = ["--registration", "open"]
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("TOKENIM_TEST_DATABASE_URL is not set")
        extra += ["--database", asyncio.run(_fresh_pg_database())]
    srv = start_server(tmp_path / "data", *extra)
    yield srv
    stop_server(srv)


def bodies(cli: Cli, target: str) -> list[str]:
    return [str(m["body"]) for m in json.loads(cli.run("read", target, "--json").stdout) if m.get("body")]


def test_register_chat_rotate_export_import_restore_revoke(walk_server: RunningServer, tmp_path: Path) -> None:
    url = walk_server.url
    alice = Cli(tmp_path / "alice", env={"TOKENIM_EXPORT_PASSPHRASE": FILE_PASS})
    bob = Cli(tmp_path / "bob")
    for name, cli in [("alice", alice), ("bob", bob)]:
        cli.json("register", "--server", url, "--username", name)
    old_device = str(alice.json("whoami")["device_id"])

    assert alice.json("send", "@bob", "before anything")["excluded"] == []
    assert bob.json("send", "@alice", "hello alice")["excluded"] == []
    assert bodies(alice, "@bob") == ["before anything", "hello alice"]
    recovery_key = str(alice.json("backup", "create")["recovery_key"])

    rotated = alice.json("keys", "rotate")
    assert (rotated["old_version"], rotated["new_version"]) == (1, 2)
    assert "rotated their master key (version 2)" in bob.run("read", "@alice").stdout

    key_file = tmp_path / "alice.pem"
    alice.json("keys", "export", "--out", str(key_file))
    laptop = Cli(tmp_path / "laptop", env={"TOKENIM_EXPORT_PASSPHRASE": FILE_PASS, "TOKENIM_RECOVERY_KEY": recovery_key})
    imported = laptop.json("keys", "import", str(key_file), "--server", url, "--username", "alice")
    assert imported["master_key_version"] == 2 and imported["device_id"] != old_device

    restored = laptop.json("backup", "restore")
    assert int(str(restored["imported"])) >= 1
    assert bodies(laptop, "@bob")[:2] == ["before anything", "hello alice"]  # history from before the laptop existed

    assert laptop.json("devices", "revoke", old_device)["revoked"] is True
    refused = alice.run("read", "@bob", "--json", check=False)
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"]["code"] == "device_revoked"
    said = alice.run("send", "@bob", "am I still here?", check=False)
    assert said.returncode == 1 and f"This device ({old_device}) was revoked" in said.stderr
    assert "Traceback" not in refused.stderr + said.stderr

    # Bob keeps talking to alice, now only to her laptop.
    assert bob.json("send", "@alice", "after the revocation")["excluded"] == []
    assert bodies(laptop, "@bob")[-1] == "after the revocation"
