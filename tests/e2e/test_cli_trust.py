"""Key changes and forked profiles, from the command line against a real server: a send that leaves
someone out says who and why, a contact's new key is accepted only deliberately, and a copied profile
is refused instead of sending with the same keys twice."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.e2e.conftest import Cli, RunningServer, start_server, stop_server
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import SystemClock
from tokenim.core.ids import DeviceId, UserId
from tokenim.core.signing import fingerprint
from tokenim.crypto.device import DeviceIdentity

pytestmark = pytest.mark.e2e


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


def swap_master(server: RunningServer, user_id: str) -> str:
    """What a malicious server can do: present a master key of its own for `user_id`. Returns its public key."""
    fake = DeviceIdentity.create(UserId(user_id), DeviceId("FAKEDEVICE1"), int(time.time() * 1000))
    with sqlite3.connect(server.data_dir / "tokenim.db") as db:
        db.execute(
            "INSERT INTO master_keys(user_id, version, public_key, key_json, created_at) VALUES (?, 99, ?, ?, 0)",
            (user_id, fake.master.public_key, json.dumps(fake.master_key_object())),
        )
    return fake.master.public_key


def end_swap(server: RunningServer, user_id: str) -> None:
    with sqlite3.connect(server.data_dir / "tokenim.db") as db:
        db.execute("DELETE FROM master_keys WHERE user_id = ? AND version = 99", (user_id,))


def test_key_changes_are_never_silent(open_server: RunningServer, tmp_path: Path) -> None:
    alice, bob, carol = Cli(tmp_path / "alice"), Cli(tmp_path / "bob"), Cli(tmp_path / "carol")
    for name, cli in [("alice", alice), ("bob", bob), ("carol", carol)]:
        cli.json("register", "--server", open_server.url, "--username", name)
    assert alice.json("send", "@bob", "hello")["excluded"] == []

    # The server swaps Bob's key: Alice's send says Bob was left out, why, and what to do.
    real = str(bob.json("keys", "show")["master_key"])
    fake = swap_master(open_server, "@bob:localhost")
    sent = alice.json("send", "@bob", "during the swap")
    assert [(e["user_id"], e["device_id"], e["reason"]) for e in sent["excluded"]] == [  # type: ignore[union-attr, index]
        ("@bob:localhost", None, "master_key_changed")
    ]
    text = alice.run("send", "@bob", "still during the swap").stdout
    assert "Sent" in text and "Warning: 1 member device(s) left out" in text and "@bob:localhost (all devices)" in text
    assert fingerprint(real) in text and fingerprint(fake) in text and "tokenim keys accept @bob:localhost" in text
    shown = alice.json("keys", "show", "@bob")
    assert shown["status"] == "changed" and shown["pinned_fingerprint"] == fingerprint(real)
    assert "CHANGED" in alice.run("keys", "show", "@bob").stdout
    # Not at a terminal and no fingerprint: nothing is accepted.
    refused = alice.run("keys", "accept", "@bob", check=False)
    assert refused.returncode == 1 and "--fingerprint" in refused.stderr
    # The swap ends: Bob is included again with nothing to do.
    end_swap(open_server, "@bob:localhost")
    assert alice.json("send", "@bob", "after the swap")["excluded"] == []
    read = json.loads(bob.run("read", "@alice", "--json").stdout)
    assert [m.get("body") for m in read] == ["hello", None, None, "after the swap"]

    # Carol is first seen during a swap: Alice pins the wrong key, and the real one then shows as changed.
    swap_master(open_server, "@carol:localhost")
    first = alice.json("send", "@carol", "first contact")
    assert {e["reason"] for e in first["excluded"]} == {"bad_device_signature"}  # type: ignore[union-attr, index]
    end_swap(open_server, "@carol:localhost")
    stuck = alice.json("send", "@carol", "are you there?")
    assert [e["reason"] for e in stuck["excluded"]] == ["master_key_changed"]  # type: ignore[union-attr, index]
    carols = str(carol.json("keys", "show")["fingerprint"])  # Carol reads her fingerprint out to Alice
    wrong = alice.run("keys", "accept", "@carol", "--fingerprint", fingerprint(fake), "--json", check=False)
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["error"]["code"] == "fingerprint_mismatch"
    accepted = alice.run("keys", "accept", "@carol", "--fingerprint", carols).stdout
    assert "Old fingerprint" in accepted and "New fingerprint" in accepted
    assert alice.json("send", "@carol", "now you can read me")["excluded"] == []
    assert [m.get("body") for m in json.loads(carol.run("read", "@alice", "--json").stdout)][-1] == "now you can read me"


def test_a_copied_profile_is_refused(open_server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    alice.json("register", "--server", open_server.url, "--username", "alice")
    bob.json("register", "--server", open_server.url, "--username", "bob")
    alice.json("send", "@bob", "one")
    shutil.copytree(alice.profile, tmp_path / "alice-copy")
    copy = Cli(tmp_path / "alice-copy")

    alice.json("send", "@bob", "from the original")
    refused = copy.run("send", "@bob", "from the copy", check=False)
    assert refused.returncode == 1 and "out-of-date copy" in refused.stderr
    again = copy.run("send", "@bob", "from the copy", "--json", check=False)
    assert again.returncode == 1 and json.loads(again.stdout)["error"]["code"] == "profile_forked"
    alice.json("send", "@bob", "two")
    read = json.loads(bob.run("read", "@alice", "--json").stdout)
    assert [(m.get("body"), m.get("warning")) for m in read] == [("one", None), ("from the original", None), ("two", None)]


def test_the_websocket_send_checks_the_send_number_too(open_server: RunningServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        clients = [
            await Client.register(
                tmp_path / name, PASSPHRASE, server_url=open_server.url, username=name, clock=SystemClock(), kdf=FAST_KDF
            )
            for name in ("alice", "bob")
        ]
        alice = clients[0]
        room = (await alice.rooms.direct("@bob")).room_id
        insides(alice).machine.prepare_room_send(room, [], 0)
        content = insides(alice).machine.encrypt_room_message(room, {"type": "m.text", "body": "over the socket"})
        url = open_server.url.replace("http", "ws", 1) + "/v1/ws"
        headers = {"Authorization": f"Bearer {alice.account.access_token()}"}
        async with websockets.connect(url, additional_headers=headers) as ws:

            async def send(txn: str, seq: object) -> dict[str, object]:
                await ws.send(json.dumps({"type": "send", "room_id": room, "txn_id": txn, "content": content, "device_seq": seq}))
                return json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]

            first = await send("w1", 7)
            assert first["type"] == "sent"
            assert (await send("w1", 7))["event_id"] == first["event_id"]  # a retry: the first answer
            refused = await send("w2", 7)
            assert refused["txn_id"] == "w2" and refused["error"]["code"] == "profile_forked"  # type: ignore[index]
            bad = await send("w3", "7")
            assert bad["error"]["code"] == "invalid_request"  # type: ignore[index]
            assert (await send("w4", 8))["type"] == "sent"
        for c in clients:
            await c.close()

    asyncio.run(scenario())
