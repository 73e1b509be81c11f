"""The messaging commands as a person types them: rooms, send, read, listen, send-file, download."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENIM, Cli, LineReader, RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def open_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


def test_chat_from_the_command_line(open_server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    alice.json("register", "--server", open_server.url, "--username", "alice")
    bob.json("register", "--server", open_server.url, "--username", "bob")

    sent = alice.json("send", "@bob", "hello bob")
    messages = json.loads(bob.run("read", "@alice", "--json").stdout)
    assert [(m["body"], m["sender"], m["verified"]) for m in messages] == [("hello bob", "@alice:localhost", True)]
    assert set(messages[0]) == {"id", "room", "sender", "sender_device", "body", "ts", "verified", "verified_by", "why_not"}
    assert messages[0]["verified_by"] is None and "not verified" in messages[0]["why_not"]
    assert messages[0]["id"] == sent["event_id"] and messages[0]["room"] == sent["room_id"]

    room = alice.json("room", "create", "plans", "--invite", "@bob")
    assert room["name"] == "plans" and room["role"] == "admin"
    invited = bob.json("rooms")["rooms"]
    assert {(r["name"], r["membership"]) for r in invited} >= {("plans", "invite")}
    assert bob.json("room", "join", "plans")["membership"] == "join"
    members = alice.json("room", "members", "plans")["members"]
    assert {(m["user_id"], m["role"]) for m in members} == {("@alice:localhost", "admin"), ("@bob:localhost", "member")}

    # listen streams JSON lines as messages arrive.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")} | {"TOKENIM_PASSPHRASE": bob.passphrase}
    sockets_before = len(open_server.output)
    listener = subprocess.Popen(
        [*TOKENIM, "--profile", str(bob.profile), "listen", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Wait until the server has accepted the listener's socket: a message sent from then on reaches it,
        # live or in its catch-up.
        open_server.wait_for_output('"WebSocket /v1/ws" [accepted]', after=sockets_before)
        lines = LineReader(listener)
        alice.json("send", "plans", "kick-off on Monday")
        live = json.loads(lines.line(timeout=60))
        assert live["body"] == "kick-off on Monday" and live["sender"] == "@alice:localhost" and live["verified"] is True
        assert live["mention"] is False and live["direct"] is False  # what `tokenim chat` rings the bell for
        alice.json("send", "@bob", "psst @bob")
        live = json.loads(lines.line(timeout=60))
        assert (live["body"], live["mention"], live["direct"]) == ("psst @bob", True, True)
    finally:
        listener.terminate()
        listener.communicate(timeout=10)

    doc = tmp_path / "agenda.txt"
    doc.write_text("1. budget\n2. hiring\n" * 500)
    alice.json("send-file", "plans", str(doc))
    read = json.loads(bob.run("read", "plans", "--json").stdout)
    files = [m for m in read if m.get("file")]
    assert len(files) == 1 and files[0]["file"]["name"] == "agenda.txt"
    out = tmp_path / "copy.txt"
    got = bob.json("download", files[0]["id"], "--out", str(out))
    assert got["size"] == doc.stat().st_size and out.read_text() == doc.read_text()
    assert "agenda.txt" in bob.run("read", "plans").stdout

    # Room admin actions and their refusals.
    denied = bob.run("room", "rename", "plans", "new name", check=False)
    assert denied.returncode == 1 and "Only a room admin" in denied.stderr
    alice.json("room", "rename", "plans", "roadmap")
    alice.json("room", "remove", "roadmap", "@bob")
    gone = bob.run("send", "roadmap", "still here?", check=False)
    assert gone.returncode == 1
    out_json = bob.run("send", str(room["room_id"]), "still here?", "--json", check=False)
    assert json.loads(out_json.stdout)["error"]["code"] == "forbidden"
