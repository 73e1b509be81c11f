"""The foundation, end to end: a real server, two CLI profiles, invites, login by key, devices, keys,
and a scan of the server's database for anything secret."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENIM, Cli, RunningServer, start_server, stop_server
from tokenim.client import ProfileStore
from tokenim.core.encoding import b64encode

pytestmark = pytest.mark.e2e


def _secrets_of(cli: Cli) -> dict[str, str]:
    """Read a profile's private material (as the device itself would) to search the server for it."""
    store = ProfileStore.open(cli.profile, cli.passphrase)
    try:
        found = {}
        for name in ("master_seed", "access_token", "refresh_token"):
            value = store.get_secret(name)
            assert value is not None, name
            found[name] = b64encode(value) if name == "master_seed" else value.decode()
        found["master_seed_hex"] = store.get_secret("master_seed").hex()  # type: ignore[union-attr]
        return found
    finally:
        store.close()


def _dump_database(data_dir: Path) -> str:
    conn = sqlite3.connect(data_dir / "tokenim.db")
    try:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [repr(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"')]
    finally:
        conn.close()
    raw = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
    return "\n".join(rows) + raw.decode("latin-1")


def test_register_login_devices_keys_and_no_secrets_on_server(server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")

    reg = alice.json("register", "--server", server.url, "--username", "alice", "--invite", server.bootstrap_invite)
    assert reg["user_id"] == "@alice:localhost" and reg["is_admin"] is True

    # The bootstrap invite is single use.
    again = Cli(tmp_path / "mallory").run(
        "register", "--server", server.url, "--username", "mallory", "--invite", server.bootstrap_invite, check=False
    )
    assert again.returncode == 1 and "already been used" in again.stderr
    assert not (tmp_path / "mallory" / "profile.db").exists()

    invite = alice.json("admin", "invite", "create", "--expires", "1d")
    reg_bob = bob.json("register", "--server", server.url, "--username", "bob", "--invite", str(invite["code"]))
    assert reg_bob["is_admin"] is False

    # Bob cannot make invites.
    denied = bob.run("admin", "invite", "create", check=False)
    assert denied.returncode == 1 and "Only an admin" in denied.stderr

    # Log out, prove that the session is gone, log back in by key.
    assert bob.json("logout") == {"logged_out": True, "all": False, "sessions_ended": 1}
    out = bob.run("whoami", "--json", check=False)
    assert out.returncode == 1 and json.loads(out.stdout)["error"]["code"] == "not_logged_in"
    assert bob.json("login")["logged_in"] is True
    who = bob.json("whoami")
    assert who == {
        "user_id": "@bob:localhost",
        "device_id": reg_bob["device_id"],
        "is_admin": False,
        "email": None,
        "key_rotation_days": 365,
    }

    devices = bob.json("devices")["devices"]
    assert [d["device_id"] for d in devices] == [reg_bob["device_id"]]  # type: ignore[index]
    human = bob.run("devices").stdout
    assert reg_bob["device_id"] in human

    keys = bob.json("keys", "show")
    assert keys["device_id"] == reg_bob["device_id"]
    assert len(str(keys["fingerprint"]).split()) == 12
    assert "Fingerprint:" in bob.run("keys", "show").stdout

    # A wrong passphrase is a clear error and changes nothing.
    before = (bob.profile / "profile.db").read_bytes()
    wrong = Cli(bob.profile, passphrase="not it").run("whoami", check=False)
    assert wrong.returncode == 1 and "passphrase is wrong" in wrong.stderr
    assert (bob.profile / "profile.db").read_bytes() == before

    # Nothing private reaches the server's database: no master key, no access or refresh token.
    dump = _dump_database(server.data_dir)
    for cli in (alice, bob):
        for name, secret in _secrets_of(cli).items():
            assert secret not in dump, f"{name} of {cli.profile.name} found in the server database"
    assert "alice" in dump  # the scan does see the database's contents


def test_server_restart_keeps_accounts_and_prints_no_new_invite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    alice = Cli(tmp_path / "alice")
    alice.json("register", "--server", first.url, "--username", "alice", "--invite", first.bootstrap_invite)
    stop_server(first)
    second = start_server(data, port=int(first.url.rsplit(":", 1)[1]))
    try:
        assert not any(line.startswith("Bootstrap invite") for line in second.output)
        assert alice.json("login")["logged_in"] is True
        assert alice.json("whoami")["is_admin"] is True
    finally:
        stop_server(second)


def test_bad_config_fails_at_start_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TOKENIM, "serve", "--data", str(tmp_path / "d"), "--registration", "open", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "port" in proc.stderr
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("port = [")
    proc = subprocess.run([*TOKENIM, "serve", "--config", str(bad_toml)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr and proc.stderr.strip().count("\n") == 0
