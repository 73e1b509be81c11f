"""Key files from the command line against a real server: the master key exported, opened by the real
`openssl`, imported as a new device in a new profile that sends and reads; room keys exported on the old
device and imported on the new one, so the old history reads there."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENIM, Cli, RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e
FILE_PASS = "tangerine lighthouse quarrel noodle"


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


@dataclass
class KeyCli(Cli):
    """A profile's CLI with the key file passphrase in TOKENIM_EXPORT_PASSPHRASE."""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
        env |= {"TOKENIM_PASSPHRASE": self.passphrase, "TOKENIM_EXPORT_PASSPHRASE": FILE_PASS}
        proc = subprocess.run(
            [*TOKENIM, "--profile", str(self.profile), *args], capture_output=True, text=True, env=env, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tokenim {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_export_openssl_import_and_the_new_device_chats(open_server: RunningServer, tmp_path: Path) -> None:
    alice, bob = KeyCli(tmp_path / "alice"), KeyCli(tmp_path / "bob")
    alice.json("register", "--server", open_server.url, "--username", "alice")
    bob.json("register", "--server", open_server.url, "--username", "bob")
    alice.json("room", "create", "team", "--invite", "@bob")
    bob.json("room", "join", "team")
    alice.json("send", "team", "old history")

    key_file = tmp_path / "alice-master.pem"
    exported = alice.json("keys", "export", "--out", str(key_file))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    shown = alice.json("keys", "show")
    assert exported["master_key"] == shown["master_key"]
    again = alice.run("keys", "export", "--out", str(key_file), "--json", check=False)
    assert again.returncode == 1 and json.loads(again.stdout)["error"]["code"] == "file_exists"

    der = subprocess.run(
        ["openssl", "pkey", "-in", str(key_file), "-passin", f"pass:{FILE_PASS}", "-pubout", "-outform", "DER"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    assert base64.b64encode(der[-32:]).decode().rstrip("=") == shown["master_key"]

    # A wrong passphrase: refused, no profile left behind.
    wrong = KeyCli(tmp_path / "wrong")
    bad = subprocess.run(
        [*TOKENIM, "--profile", str(wrong.profile), "keys", "import", str(key_file), "--server", open_server.url,
         "--username", "alice", "--json"],
        capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")},
             "TOKENIM_PASSPHRASE": "e2e passphrase", "TOKENIM_EXPORT_PASSPHRASE": "not it"},
    )  # fmt: skip
    assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["code"] == "bad_key_file"
    assert not wrong.profile.exists()

    laptop = KeyCli(tmp_path / "laptop")
    imported = laptop.json("keys", "import", str(key_file), "--server", open_server.url, "--username", "alice")
    assert imported["user_id"] == "@alice:localhost" and imported["fingerprint"] == shown["fingerprint"]
    assert imported["device_id"] != shown["device_id"]
    before = json.loads(laptop.run("read", "team", "--json").stdout)
    assert [m.get("body") for m in before] == [None]  # "old history": its key is not on the laptop yet

    # Room keys: exported on the old device, imported on the laptop; the old history reads.
    room_keys = tmp_path / "room-keys.txt"
    assert alice.json("keys", "export-room-keys", "--out", str(room_keys))["sessions"] == 1
    assert stat.S_IMODE(room_keys.stat().st_mode) == 0o600
    assert room_keys.read_text().startswith("-----BEGIN MEGOLM SESSION DATA-----\n")
    refused = alice.run("keys", "export-room-keys", "--out", str(room_keys), check=False)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert laptop.json("keys", "import-room-keys", str(room_keys)) == {"imported": 1, "already_held": 0, "unusable": 0}
    after = json.loads(laptop.run("read", "team", "--json").stdout)
    assert [(m.get("body"), m["verified"]) for m in after] == [("old history", False)]
    assert "Imported 0 room key(s); 1 were here already." in laptop.run("keys", "import-room-keys", str(room_keys)).stdout

    laptop.json("send", "team", "from the laptop")
    read = json.loads(bob.run("read", "team", "--json").stdout)
    assert [m.get("body") for m in read][-1] == "from the laptop"
    bob.json("send", "team", "welcome, laptop")
    mine = json.loads(laptop.run("read", "team", "--json").stdout)
    assert [m.get("body") for m in mine] == ["old history", "from the laptop", "welcome, laptop"]
