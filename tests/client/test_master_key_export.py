"""Exporting the master key to a PKCS#8 file and importing it on a new device: what works, what is
refused before anything changes, and the audit records each leaves."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.conftest import FAST_KDF, PASSPHRASE, MakeUser
from tests.identity_kit import master_key_object, resign, rotation_object
from tests.support import client_auth, insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.signing import SigningKey
from tokenim.crypto.master_export import export_master_pem

KEY_PASS = "tangerine lighthouse quarrel noodle"


async def _import(tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock, key_file: bytes, **kw: str) -> Client:
    return await Client.import_master_key(
        tmp_path / kw.get("profile", "new-profile"),
        PASSPHRASE,
        key_file=key_file,
        key_passphrase=kw.get("key_passphrase", KEY_PASS),
        server_url="http://tokenim.test",
        username=kw.get("username", "alice"),
        clock=clock,
        kdf=FAST_KDF,
        transport=transport,
    )


async def test_export_writes_a_private_file_and_records_it(alice: Client, tmp_path: Path) -> None:
    out = tmp_path / "master.pem"
    await alice.key_files.export_master_key(out, KEY_PASS)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(out.read_bytes(), KEY_PASS.encode())
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert SigningKey(key).public_key == alice.keys.info().master_key
    events = (await alice.audit.events()).events
    assert events[0].event == "client.master_key.exported" and events[0].device_id == alice.device_id
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tokenim-")] == []  # no temporary file left


async def test_export_never_replaces_a_file_and_records_nothing_then(alice: Client, tmp_path: Path) -> None:
    out = tmp_path / "master.pem"
    out.write_text("keep me")
    with pytest.raises(TokenIMError) as exc:
        await alice.key_files.export_master_key(out, KEY_PASS)
    assert exc.value.code is ErrorCode.FILE_EXISTS
    assert out.read_text() == "keep me"
    link = tmp_path / "link.pem"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(TokenIMError) as exc:
        await alice.key_files.export_master_key(link, KEY_PASS)
    assert exc.value.code is ErrorCode.FILE_EXISTS
    with pytest.raises(TokenIMError) as exc:
        await alice.key_files.export_master_key(tmp_path / "no" / "such" / "master.pem", KEY_PASS)
    assert exc.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(TokenIMError):
        await alice.key_files.export_master_key(tmp_path / "x.pem", "")
    assert all(e.event != "client.master_key.exported" for e in (await alice.audit.events()).events)


async def test_an_export_the_server_does_not_record_writes_no_file(alice: Client, tmp_path: Path) -> None:
    await alice.account.logout()
    out = tmp_path / "master.pem"
    with pytest.raises(TokenIMError):
        await alice.key_files.export_master_key(out, KEY_PASS)
    assert not out.exists()
    assert list(tmp_path.glob(".tokenim-*")) == []


async def test_import_makes_a_new_device_that_sends_and_reads(
    alice: Client, bob: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    out = tmp_path / "master.pem"
    await alice.key_files.export_master_key(out, KEY_PASS)
    room = (await alice.rooms.create("team", ["@bob"])).room_id
    await bob.rooms.join(room)

    new = await _import(tmp_path, transport, clock, out.read_bytes())
    try:
        assert new.user_id == alice.user_id and new.device_id != alice.device_id
        assert new.keys.info().master_key == alice.keys.info().master_key
        assert {d.device_id for d in (await alice.devices.all()).devices} == {alice.device_id, new.device_id}
        assert (await new.keys.counts()).one_time_keys > 0
        await new.messages.send_text(room, "from the imported device")
        got = [m for m in await bob.messages.sync() if m.room == room]
        assert [(m.body, m.verified) for m in got] == [("from the imported device", True)]
        await bob.messages.send_text(room, "hello both")
        got = [m for m in await new.messages.sync() if m.room == room]
        assert [m.body for m in got] == ["from the imported device", "hello both"], [
            (m.sender_device, m.body, m.warning) for m in got
        ]
        events = [(e.event, e.device_id, e.details) for e in (await new.audit.events()).events]
        assert ("device.added", new.device_id, {"by": "master_key", "master_key_version": 1}) in events
    finally:
        await new.close()
    reopened = await Client.open(tmp_path / "new-profile", PASSPHRASE, clock=clock, transport=transport)
    assert reopened.device_id == new.device_id
    await reopened.close()


async def _refused_import(
    tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock, owner: Client, key_file: bytes, **kw: str
) -> TokenIMError:
    before = {d.device_id for d in (await owner.devices.all()).devices}
    with pytest.raises(TokenIMError) as exc:
        await _import(tmp_path, transport, clock, key_file, **kw)
    assert not (tmp_path / "new-profile").exists()  # no profile left behind
    assert {d.device_id for d in (await owner.devices.all()).devices} == before  # no device added
    return exc.value


async def test_a_bad_file_or_passphrase_is_refused_before_anything_changes(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    pem = export_master_pem(insides(alice).identity.master, KEY_PASS, iterations=1000)
    cases = {
        "wrong passphrase": (pem, "not the passphrase"),
        "truncated": (pem[: len(pem) // 2], KEY_PASS),
        "not PEM": (b"just some text", KEY_PASS),
        "altered": (pem.replace(pem.splitlines()[2][:8], b"AAAAAAAA"), KEY_PASS),
    }
    for _name, (data, passphrase) in cases.items():
        err = await _refused_import(tmp_path, transport, clock, alice, data, key_passphrase=passphrase)
        assert err.code is ErrorCode.BAD_KEY_FILE, _name
    plain = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert (await _refused_import(tmp_path, transport, clock, alice, plain)).code is ErrorCode.BAD_KEY_FILE


async def test_another_users_key_is_refused(
    alice: Client, bob: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    bobs = export_master_pem(insides(bob).identity.master, KEY_PASS, iterations=1000)
    err = await _refused_import(tmp_path, transport, clock, alice, bobs, username="alice")
    assert err.code is ErrorCode.KEY_NOT_CURRENT and "is not @alice:tokenim.test's master key" in err.message
    err = await _refused_import(tmp_path, transport, clock, alice, bobs, username="nobody")
    assert err.code is ErrorCode.UNKNOWN_USER


async def test_a_key_superseded_by_a_rotation_is_refused(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    old = insides(alice).identity.master
    pem = export_master_pem(old, KEY_PASS, iterations=1000)
    new = SigningKey.generate()
    uid = alice.user_id
    device = (await alice.keys.query([uid]))[uid].devices[alice.device_id].raw
    body = {
        "master_key": master_key_object(uid, new, 2),
        "rotation": rotation_object(uid, old, 1, new),
        "devices": [resign(device, uid, new)],
    }
    resp = await insides(alice).transport.http.post("/v1/keys/rotate", json=body, headers=client_auth(alice))
    assert resp.status_code == 200, resp.text
    err = await _refused_import(tmp_path, transport, clock, alice, pem)
    assert err.code is ErrorCode.KEY_NOT_CURRENT
    assert "old master key (version 1)" in err.message and "current one is version 2" in err.message
    # The current key imports.
    fresh = await _import(tmp_path, transport, clock, export_master_pem(new, KEY_PASS, iterations=1000))
    assert fresh.keys.info().master_key_version == 2
    await fresh.close()


async def test_an_existing_profile_is_never_touched(
    alice: Client, make_user: MakeUser, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    pem = export_master_pem(insides(alice).identity.master, KEY_PASS, iterations=1000)
    with pytest.raises(TokenIMError) as exc:
        await _import(tmp_path, transport, clock, pem, profile="profile-alice")
    assert exc.value.code is ErrorCode.PROFILE_EXISTS
    assert [d.device_id for d in (await alice.devices.all()).devices] == [alice.device_id]


class _LoseAnswer(httpx.AsyncBaseTransport):
    """The in-process server, but the answer to the add-device request is lost on the way back."""

    def __init__(self, inner: httpx.ASGITransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path == "/v1/devices/by_master_key/add":
            raise httpx.ReadError("connection lost", request=request)
        return response


async def test_a_lost_answer_leaves_no_profile_and_says_what_to_check(
    alice: Client, tmp_path: Path, transport: httpx.ASGITransport, clock: FakeClock
) -> None:
    pem = export_master_pem(insides(alice).identity.master, KEY_PASS, iterations=1000)
    with pytest.raises(TokenIMError) as exc:
        await Client.import_master_key(
            tmp_path / "new-profile",
            PASSPHRASE,
            key_file=pem,
            key_passphrase=KEY_PASS,
            server_url="http://tokenim.test",
            username="alice",
            clock=clock,
            kdf=FAST_KDF,
            transport=_LoseAnswer(transport),
        )
    assert exc.value.code is ErrorCode.SERVER_UNREACHABLE and "devices remove" in exc.value.message
    assert not (tmp_path / "new-profile").exists()
