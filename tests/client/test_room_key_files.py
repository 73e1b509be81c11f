"""Room keys exported from one device and imported on a new device of the same user: old history
becomes readable, is shown as not verified, survives a restart, and a bad file imports nothing."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from tests.client.test_master_key_export import KEY_PASS, _import
from tests.conftest import PASSPHRASE
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.master_export import export_master_pem
from tokenim.crypto.room_key_export import FOOTER, HEADER


async def _history(client: Client, room: str) -> list[tuple[str | None, bool, bool]]:
    return [(m.body, m.verified, m.warning is None) for m in await client.messages.history(room)]


async def test_old_history_becomes_readable_on_a_new_device(
    alice: Client, bob: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    room = (await alice.rooms.create("team", ["@bob"])).room_id
    await bob.rooms.join(room)
    await bob.messages.send_text(room, "old news from bob")
    await alice.messages.send_text(room, "old news from alice")
    await alice.messages.sync()

    out = tmp_path / "room-keys.txt"
    assert await alice.key_files.export_room_keys(out, KEY_PASS) == 2  # bob's session and alice's own
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith(HEADER + "\n") and out.read_text().rstrip().endswith(FOOTER)
    assert [(e.event, e.details) for e in (await alice.audit.events(limit=1)).events] == [
        ("client.room_keys.exported", {"sessions": 2})
    ]

    new = await _import(tmp_path, transport, clock, export_master_pem(insides(alice).identity.master, KEY_PASS, iterations=1000))
    try:
        assert [ok for _, _, ok in await _history(new, room)] == [False, False]  # the keys are not here yet
        counts = await new.key_files.import_room_keys(out, KEY_PASS)
        assert (counts.imported, counts.already_held, counts.unusable) == (2, 0, 0)
        # Readable, but not shown as verified: the file, not the sender, says who sent each key.
        assert await _history(new, room) == [("old news from bob", False, True), ("old news from alice", False, True)]
        again = await new.key_files.import_room_keys(out, KEY_PASS)
        assert (again.imported, again.already_held) == (0, 2)
        events = [(e.event, e.device_id, e.details) for e in (await new.audit.events(limit=2)).events]
        assert events[0] == ("client.room_keys.imported", new.device_id, {"sessions": 2})
        # Bob learns of the new device and gives it his session over Olm: it vouches for the session, so what it
        # decrypts, old and new, is verified from then on.
        await bob.messages.sync()
        await bob.messages.send_text(room, "new news")
        got = [(m.body, m.verified) for m in await new.messages.sync() if m.room == room]
        assert got[-1] == ("new news", True)
        assert (await _history(new, room))[0] == ("old news from bob", True, True)
    finally:
        await new.close()
    reopened = await Client.open(tmp_path / "new-profile", PASSPHRASE, clock=clock, transport=transport)
    try:
        assert (await _history(reopened, room))[:2] == [("old news from bob", True, True), ("old news from alice", False, True)]
    finally:
        await reopened.close()


async def test_a_bad_room_key_file_imports_nothing(
    alice: Client, bob: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    room = (await alice.rooms.create("team", ["@bob"])).room_id
    await bob.rooms.join(room)
    await bob.messages.send_text(room, "secret")
    await alice.messages.sync()
    out = tmp_path / "keys.txt"
    await alice.key_files.export_room_keys(out, KEY_PASS)
    new = await _import(tmp_path, transport, clock, export_master_pem(insides(alice).identity.master, KEY_PASS, iterations=1000))
    try:
        held = dict(insides(new).machine.rooms.inbound)
        text = out.read_text()
        lines = text.splitlines()
        altered = tmp_path / "altered.txt"
        middle = lines[1]
        altered.write_text(text.replace(middle, middle[:10] + ("A" if middle[10] != "A" else "B") + middle[11:]))
        truncated = tmp_path / "truncated.txt"
        truncated.write_text("\n".join(lines[:2]))
        for path, passphrase in [(out, "not the passphrase"), (altered, KEY_PASS), (truncated, KEY_PASS)]:
            with pytest.raises(TokenIMError) as exc:
                await new.key_files.import_room_keys(path, passphrase)
            assert exc.value.code is ErrorCode.BAD_KEY_FILE
        with pytest.raises(TokenIMError) as exc:
            await new.key_files.import_room_keys(tmp_path / "missing.txt", KEY_PASS)
        assert exc.value.code is ErrorCode.INVALID_REQUEST
        assert insides(new).machine.rooms.inbound == held
        assert all(e.event != "client.room_keys.imported" for e in (await new.audit.events()).events)
        assert [ok for _, _, ok in await _history(new, room)] == [False]
    finally:
        await new.close()


async def test_room_key_export_never_replaces_a_file(alice: Client, tmp_path: Path) -> None:
    out = tmp_path / "keys.txt"
    out.write_text("mine")
    with pytest.raises(TokenIMError) as exc:
        await alice.key_files.export_room_keys(out, KEY_PASS)
    assert exc.value.code is ErrorCode.FILE_EXISTS and out.read_text() == "mine"
    assert all(e.event != "client.room_keys.exported" for e in (await alice.audit.events()).events)
