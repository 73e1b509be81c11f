"""Metadata at rest: the profile keeps no room id, no contact's user id and no session id readable,
and a profile written by an older version (readable record names) is converted when opened."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.support import insides
from tokenim.client import Client, ProfileStore
from tokenim.core.clock import FakeClock


def _profile_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


async def test_profile_keeps_no_room_or_contact_id_readable(alice: Client, bob: Client, carol: Client, clock: FakeClock) -> None:
    room = (await alice.rooms.create("plans", ["@bob", "@carol"])).room_id
    await bob.rooms.join(room)
    await carol.rooms.join(room)
    sent = await alice.messages.send_text(room, "hello")
    await bob.messages.sync()
    session_id = insides(alice).machine.rooms.outbound[room].session.session_id
    for client in (alice, bob):
        directory = insides(client).store.path.parent
        await client.close()
        data = _profile_bytes(directory)
        for secret in (room, carol.user_id, session_id, sent.event_id):
            assert secret.encode() not in data, f"{secret} is readable in {directory.name}"
        if client is bob:
            assert alice.user_id.encode() not in data
        # Lookups still work: everything comes back under its own name.
        reopened = await Client.open(directory, PASSPHRASE, clock=clock)
        try:
            records = insides(reopened).store.all_records()
            if client is alice:
                assert room in records["outbound"]
                assert insides(reopened).store.get_record("outbound", room) == records["outbound"][room]
                assert set(records["pin"]) >= {bob.user_id, carol.user_id}
            else:
                assert any(ref.startswith(room + "|") for ref in records["inbound"])
        finally:
            await reopened.close()


def test_old_profile_with_readable_names_is_converted(tmp_path: Path) -> None:
    profile = tmp_path / "old"
    store = ProfileStore.create(profile, PASSPHRASE, FAST_KDF)
    # Write records the way earlier versions did: readable names, AAD "kind NUL name".
    aead = store._aead
    conn = store._conn
    conn.execute("DELETE FROM meta WHERE name = 'records_format'")
    for kind, name, value in [("outbound", "!room:old", b"o"), ("pinned_master", "@dave:old.example", b"k")]:
        nonce = os.urandom(12)
        conn.execute(
            "INSERT INTO records(kind, name, nonce, ciphertext) VALUES (?, ?, ?, ?)",
            (kind, name, nonce, aead.encrypt(nonce, value, f"{kind}\x00{name}".encode())),
        )
    conn.commit()
    store.close()

    store = ProfileStore.open(profile, PASSPHRASE)
    try:
        assert store.all_records() == {"outbound": {"!room:old": b"o"}, "pinned_master": {"@dave:old.example": b"k"}}
        names = [r[0] for r in store._conn.execute("SELECT kind || name FROM records")]
        assert all("!room" not in n and "@dave" not in n for n in names)
    finally:
        store.close()
    data = _profile_bytes(profile)
    assert b"!room:old" not in data and b"@dave:old.example" not in data
    # And it is converted once: opening again changes nothing and reads the same.
    store = ProfileStore.open(profile, PASSPHRASE)
    try:
        assert store.get_record("pinned_master", "@dave:old.example") == b"k"
    finally:
        store.close()


def test_a_record_moved_to_another_name_does_not_decrypt(tmp_path: Path) -> None:
    store = ProfileStore.create(tmp_path / "p", PASSPHRASE, FAST_KDF)
    try:
        store.put_records({"pinned_master": {"@a:x": b"key-a", "@b:x": b"key-b"}})
        rows = store._conn.execute("SELECT name, nonce, ciphertext FROM records").fetchall()
        # Swap the two ciphertexts between their (hashed) names: AES-GCM's associated data refuses both.
        with store._conn:
            store._conn.execute(
                "UPDATE records SET nonce = ?, ciphertext = ? WHERE name = ?", (rows[1][1], rows[1][2], rows[0][0])
            )
        try:
            store.all_records()
        except Exception as exc:
            assert type(exc).__name__ == "InvalidTag"
        else:
            raise AssertionError("a moved record was accepted")
    finally:
        store.close()
