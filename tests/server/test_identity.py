"""The identity routes on both databases: rotating the master key (accepted, and each refusal leaving
nothing behind), revoking a device (refused everywhere afterwards), the chain in key queries, and
device changes committed in one transaction with their `tokenim.device_list` events."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select

from tests.identity_kit import Account, Device, master_key_object, register, resign, revocation_object, rotation_object
from tests.support import WebSocketSession
from tokenim.core.ids import new_device_id
from tokenim.core.signing import SigningKey, sign_json
from tokenim.crypto.trust import Pin, Verdict, decide
from tokenim.protocol.api import RevokeRequest, RotateRequest
from tokenim.protocol.identity import MAX_CHAIN_LENGTH, MAX_REVOCATIONS, parse_rotation, verify_chain
from tokenim.protocol.key_lifecycle import add_device_payload
from tokenim.protocol.keys import parse_device_keys, parse_master_key, verify_device_keys
from tokenim.server.services.common import Requester
from tokenim.server.storage.accounts import AccountStore
from tokenim.server.storage.database import Database
from tokenim.server.storage.events import EventStore
from tokenim.server.storage.tables import audit_log, device_revocations, master_key_rotations, one_time_keys


def code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def query(http: httpx.AsyncClient, asker: Account, user_id: str) -> dict[str, Any]:
    resp = await http.post("/v1/keys/query", json={"user_ids": [user_id]}, headers=asker.auth())
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["users"][user_id])


async def audit_events(database: Database, user_id: str) -> list[str]:
    async with database.read() as tx:
        rows = await tx.execute(select(audit_log.c.event).where(audit_log.c.user_id == user_id).order_by(audit_log.c.id))
        return [r.event for r in rows]


async def count(database: Database, table: Any) -> int:
    async with database.read() as tx:
        return int((await tx.execute(select(func.count()).select_from(table))).scalar_one())


@pytest.fixture
async def alice(http: httpx.AsyncClient) -> Account:
    """Alice with two logged-in devices."""
    account = await register(http, "alice")
    device, resp = await account.add_device()
    assert resp.status_code == 200, resp.text
    assert (await account.login(device)).status_code == 200
    return account


@pytest.fixture
async def bob(http: httpx.AsyncClient) -> Account:
    return await register(http, "bob")


@pytest.fixture
async def room(http: httpx.AsyncClient, alice: Account, bob: Account) -> str:
    """A group Alice and Bob are in, where Alice's device changes are announced."""
    resp = await http.post("/v1/rooms", json={"name": "team", "invite": [bob.user_id]}, headers=alice.auth())
    room_id = str(resp.json()["room_id"])
    assert (await http.post(f"/v1/rooms/{room_id}/join", headers=bob.auth())).status_code == 200
    return room_id


async def device_list_events(http: httpx.AsyncClient, reader: Account) -> list[dict[str, Any]]:
    resp = await http.get("/v1/sync", params={"since": 0, "limit": 1000}, headers=reader.auth())
    return [e["content"] for e in resp.json()["events"] if e["type"] == "tokenim.device_list"]


# ---- rotation ------------------------------------------------------------------------------------


async def test_a_rotation_is_stored_and_key_queries_return_the_chain(
    http: httpx.AsyncClient, alice: Account, bob: Account, database: Database
) -> None:
    bobs_pin = Pin(alice.user_id, alice.master.public_key, 1, 0)
    new, body = alice.rotation_body()
    resp = await alice.rotate(body, new)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"version": 2}

    shown = await query(http, bob, alice.user_id)
    current = parse_master_key(shown["master_key"])
    assert (current.public_key, current.version) == (new.public_key, 2)
    assert shown["rotations"] == [body["rotation"]]  # byte for byte as signed
    assert verify_chain(current, [parse_rotation(r) for r in shown["rotations"]]).keys == (
        alice.masters[0].public_key,
        new.public_key,
    )
    assert set(shown["devices"]) == set(alice.devices)
    for raw in shown["devices"].values():
        verify_device_keys(parse_device_keys(raw), current)
    decision = decide(alice.user_id, bobs_pin, shown, 1_800_000_000_000)
    assert decision.verdict is Verdict.ROTATED_SIGNED and set(decision.devices) == set(alice.devices)
    assert "master_key.rotated" in await audit_events(database, alice.user_id)

    # Devices added from now on are signed by version 2, and the chain keeps growing.
    _, added = await alice.add_device()
    assert added.status_code == 200, added.text
    newer, body = alice.rotation_body()
    assert (await alice.rotate(body, newer)).status_code == 200
    assert len((await query(http, bob, alice.user_id))["rotations"]) == 2


async def refused_rotation(alice: Account, body: dict[str, Any], new: SigningKey, database: Database) -> httpx.Response:
    """Send a spoiled rotation; check it changed nothing."""
    before = copy.deepcopy(alice.device_objects)
    resp = await alice.rotate(body, new)
    assert resp.status_code != 200
    shown = await query(alice.http, alice, alice.user_id)
    assert parse_master_key(shown["master_key"]).version == alice.version
    assert shown["devices"] == before
    assert await count(database, master_key_rotations) == alice.version - 1
    return resp


@pytest.mark.parametrize("which", ["old", "new"])
async def test_a_rotation_missing_a_signature_is_refused(alice: Account, database: Database, which: str) -> None:
    new, body = alice.rotation_body()
    signer = alice.master if which == "old" else new
    del body["rotation"]["signatures"][alice.user_id][f"ed25519:{signer.public_key}"]
    assert code(await refused_rotation(alice, body, new, database)) == "bad_signature"


async def test_a_new_master_key_not_signed_by_itself_is_refused(alice: Account, database: Database) -> None:
    new, body = alice.rotation_body()
    body["master_key"] = sign_json(
        {k: v for k, v in body["master_key"].items() if k != "signatures"}, alice.user_id, new.public_key, alice.master
    )
    assert code(await refused_rotation(alice, body, new, database)) == "bad_signature"


async def test_a_rotation_that_skips_a_version_is_refused(alice: Account, database: Database) -> None:
    new = SigningKey.generate()
    body = {
        "master_key": master_key_object(alice.user_id, new, 3),
        "rotation": rotation_object(alice.user_id, alice.master, 1, new, 3),
        "devices": [resign(o, alice.user_id, new) for o in alice.device_objects.values()],
    }
    resp = await refused_rotation(alice, body, new, database)
    assert code(resp) == "key_chain_invalid" and resp.json()["error"]["details"] == {"problem": "version_gap"}


async def test_a_rotation_from_a_superseded_key_is_refused(alice: Account, database: Database) -> None:
    first = alice.master
    new, body = alice.rotation_body()
    assert (await alice.rotate(body, new)).status_code == 200
    stale = SigningKey.generate()
    body = {
        "master_key": master_key_object(alice.user_id, stale, 2),
        "rotation": rotation_object(alice.user_id, first, 1, stale),
        "devices": [resign(o, alice.user_id, stale) for o in alice.device_objects.values()],
    }
    resp = await refused_rotation(alice, body, stale, database)
    assert code(resp) == "key_chain_invalid" and resp.json()["error"]["details"] == {"current_version": 2}


async def test_a_rotation_back_to_an_earlier_key_is_refused(alice: Account, database: Database) -> None:
    first = alice.master
    new, body = alice.rotation_body()
    assert (await alice.rotate(body, new)).status_code == 200
    _, body = alice.rotation_body(first)
    assert code(await refused_rotation(alice, body, first, database)) == "key_chain_invalid"


async def test_a_rotation_must_lead_to_the_new_master_key(alice: Account, database: Database) -> None:
    new, body = alice.rotation_body()
    body["rotation"] = rotation_object(alice.user_id, alice.master, 1, SigningKey.generate())
    assert code(await refused_rotation(alice, body, new, database)) == "bad_key_object"


async def test_a_rotation_that_leaves_a_device_out_is_refused(alice: Account, database: Database) -> None:
    new, body = alice.rotation_body()
    left_out = body["devices"].pop()["device_id"]
    resp = await refused_rotation(alice, body, new, database)
    assert code(resp) == "devices_not_resigned"
    assert resp.json()["error"]["details"] == {"missing": [left_out], "changed": []}


async def test_a_rotation_that_changes_a_device_is_refused(alice: Account, database: Database) -> None:
    """Re-signing may add signatures only: a device with new keys slipped into a rotation is refused."""
    new, body = alice.rotation_body()
    did = body["devices"][0]["device_id"]
    swapped = Device(alice.user_id, did).keys_object(new, 1)
    body["devices"][0] = swapped
    resp = await refused_rotation(alice, body, new, database)
    assert code(resp) == "devices_not_resigned"
    assert resp.json()["error"]["details"] == {"missing": [], "changed": [did]}


async def test_a_device_not_signed_by_the_new_key_is_refused(alice: Account, database: Database) -> None:
    new, body = alice.rotation_body()
    body["devices"][0] = alice.device_objects[body["devices"][0]["device_id"]]  # only the old key's signature
    assert code(await refused_rotation(alice, body, new, database)) == "bad_signature"


async def test_a_device_the_user_does_not_have_is_refused(alice: Account, database: Database) -> None:
    new, body = alice.rotation_body()
    body["devices"].append(Device(alice.user_id, new_device_id()).keys_object(new, 2))
    assert code(await refused_rotation(alice, body, new, database)) == "unknown_device"


async def test_a_rotation_of_another_user_is_forbidden(alice: Account, bob: Account, database: Database) -> None:
    new, body = bob.rotation_body()
    resp = await alice.http.post("/v1/keys/rotate", json=body, headers=alice.auth())
    assert code(resp) == "forbidden"
    assert parse_master_key((await query(alice.http, alice, bob.user_id))["master_key"]).version == 1
    assert await count(database, master_key_rotations) == 0
    del new


async def test_a_rotation_naming_another_user_is_forbidden(alice: Account, bob: Account, database: Database) -> None:
    """Alice's own keys sign it, but it would file a rotation of Bob's in Alice's chain."""
    new, body = alice.rotation_body()
    body["rotation"] = rotation_object(bob.user_id, alice.master, 1, new)
    assert code(await refused_rotation(alice, body, new, database)) == "forbidden"


async def test_the_rotation_past_the_longest_chain_is_refused(
    http: httpx.AsyncClient, alice: Account, database: Database
) -> None:
    """Every client refuses a chain of over MAX_CHAIN_LENGTH rotations, so the server must not make one.
    A long chain is stood in for by storing the master key of version 1000 (the service reads the current key)."""
    at_1000 = SigningKey.generate()
    async with database.write() as tx:
        obj = master_key_object(alice.user_id, at_1000, MAX_CHAIN_LENGTH)
        await AccountStore().insert_master_key(tx, alice.user_id, MAX_CHAIN_LENGTH, at_1000.public_key, obj, 0)

    async def rotate(old: SigningKey, old_version: int, new: SigningKey) -> httpx.Response:
        body = {
            "master_key": master_key_object(alice.user_id, new, old_version + 1),
            "rotation": rotation_object(alice.user_id, old, old_version, new),
            "devices": [resign(o, alice.user_id, new) for o in alice.device_objects.values()],
        }
        return await http.post("/v1/keys/rotate", json=body, headers=alice.auth())

    last = SigningKey.generate()
    resp = await rotate(at_1000, MAX_CHAIN_LENGTH, last)  # the 1000th rotation: the longest chain
    assert resp.status_code == 200, resp.text
    refused = await rotate(last, MAX_CHAIN_LENGTH + 1, SigningKey.generate())
    assert code(refused) == "key_chain_invalid" and refused.status_code == 409
    assert refused.json()["error"]["details"] == {"problem": "too_long", "max_rotations": MAX_CHAIN_LENGTH}
    assert await count(database, master_key_rotations) == 1
    assert (await query(http, alice, alice.user_id))["master_key"]["version"] == MAX_CHAIN_LENGTH + 1


async def test_a_new_device_naming_an_old_master_key_version_is_told_which_is_current(
    http: httpx.AsyncClient, alice: Account
) -> None:
    """Signed by the current master key, but naming version 1 after a rotation to 2: the message says so."""
    new, body = alice.rotation_body()
    assert (await alice.rotate(body, new)).status_code == 200
    device = Device(alice.user_id, new_device_id())
    stale = device.keys_object(alice.master, 1)
    added = await http.post("/v1/devices", json={"device_keys": stale, "one_time_keys": {}}, headers=alice.auth())
    c = (
        await http.post("/v1/devices/by_master_key/challenge", json={"user_id": alice.user_id, "device_id": device.device_id})
    ).json()
    payload = add_device_payload(
        server_name=c["server_name"],
        user_id=alice.user_id,
        device_id=device.device_id,
        device_ed25519=device.ed25519,
        nonce=c["nonce"],
    )
    by_master = await http.post(
        "/v1/devices/by_master_key/add",
        json={"user_id": alice.user_id, "nonce": c["nonce"], "signature": alice.master.sign(payload), "device_keys": stale},
    )
    for resp in (added, by_master):
        assert code(resp) == "bad_key_object", resp.text
        error = resp.json()["error"]
        assert "version 1, which is not the current one" in error["message"] and "is version 2" in error["message"]
        assert "must be signed by the current master key" not in error["message"]
        assert error["details"] == {"current_version": 2}


# ---- revocation ----------------------------------------------------------------------------------


async def test_a_revoked_device_is_refused_everywhere(
    http: httpx.AsyncClient, alice: Account, bob: Account, database: Database
) -> None:
    keep, gone = list(alice.devices.values())
    gone_token, gone_refresh = alice.tokens[gone.device_id], alice.refresh_tokens[gone.device_id]
    revocation = revocation_object(gone, alice.master, 1)
    resp = await http.post("/v1/keys/revoke", json={"revocation": revocation}, headers=alice.auth(keep.device_id))
    assert resp.status_code == 200, resp.text

    # Its token, its refresh token, and logging in again.
    assert code(await http.get("/v1/whoami", headers={"Authorization": f"Bearer {gone_token}"})) == "unauthorized"
    assert code(await http.post("/v1/token/refresh", json={"refresh_token": gone_refresh})) == "unauthorized"
    assert code(await alice.login(gone)) == "device_revoked"
    # Its id, even with new keys; its keys, even under a new id, or in a new account.
    assert code((await alice.add_device(Device(alice.user_id, gone.device_id)))[1]) == "device_revoked"
    twin = Device(alice.user_id, new_device_id(), signing=gone.signing, curve25519=gone.curve25519)
    assert code((await alice.add_device(twin))[1]) == "device_revoked"
    curve_only = Device(alice.user_id, new_device_id(), curve25519=gone.curve25519)
    assert code((await alice.add_device(curve_only))[1]) == "device_revoked"
    body = {
        "username": "mallory",
        "master_key": master_key_object("@mallory:tokenim.test", (m := SigningKey.generate()), 1),
        "device_keys": Device("@mallory:tokenim.test", new_device_id(), signing=gone.signing).keys_object(m, 1),
    }
    assert code(await http.post("/v1/register", json=body)) == "device_revoked"
    # Its one-time keys are gone; others see the revocation and no longer see the device.
    claim = await http.post("/v1/keys/claim", json={"devices": {alice.user_id: [gone.device_id]}}, headers=bob.auth())
    assert claim.json()["one_time_keys"] == {}
    async with database.read() as tx:
        left = await tx.execute(
            select(func.count()).select_from(one_time_keys).where(one_time_keys.c.device_id == gone.device_id)
        )
        assert left.scalar_one() == 0
    shown = await query(http, bob, alice.user_id)
    assert shown["revocations"] == [revocation] and set(shown["devices"]) == {keep.device_id}
    assert "device.revoked" in await audit_events(database, alice.user_id)
    # The device that revoked still works, and the same revocation again is refused.
    assert (await http.get("/v1/whoami", headers=alice.auth(keep.device_id))).status_code == 200
    again = await http.post("/v1/keys/revoke", json={"revocation": revocation}, headers=alice.auth(keep.device_id))
    assert code(again) == "device_revoked"


async def refused_revocation(http: httpx.AsyncClient, alice: Account, revocation: dict[str, Any], database: Database) -> str:
    resp = await http.post("/v1/keys/revoke", json={"revocation": revocation}, headers=alice.auth())
    assert resp.status_code != 200
    assert await count(database, device_revocations) == 0
    assert set((await query(http, alice, alice.user_id))["devices"]) == set(alice.devices)
    return code(resp)


async def test_a_revocation_signed_by_another_key_is_refused(http: httpx.AsyncClient, alice: Account, database: Database) -> None:
    gone = list(alice.devices.values())[1]
    assert await refused_revocation(http, alice, revocation_object(gone, SigningKey.generate(), 1), database) == "bad_signature"


async def test_a_revocation_by_a_superseded_key_is_refused(http: httpx.AsyncClient, alice: Account, database: Database) -> None:
    first = alice.master
    new, body = alice.rotation_body()
    assert (await alice.rotate(body, new)).status_code == 200
    gone = list(alice.devices.values())[1]
    assert await refused_revocation(http, alice, revocation_object(gone, first, 1), database) == "key_chain_invalid"


async def test_a_revocation_naming_other_keys_than_the_device_has_is_refused(
    http: httpx.AsyncClient, alice: Account, database: Database
) -> None:
    gone = list(alice.devices.values())[1]
    impostor = Device(alice.user_id, gone.device_id)
    assert await refused_revocation(http, alice, revocation_object(impostor, alice.master, 1), database) == "bad_key_object"


async def test_a_revocation_for_another_user_is_forbidden(
    http: httpx.AsyncClient, alice: Account, bob: Account, database: Database
) -> None:
    bobs = next(iter(bob.devices.values()))
    assert await refused_revocation(http, alice, revocation_object(bobs, bob.master, 1), database) == "forbidden"


async def test_another_users_device_keys_can_not_be_revoked_under_a_made_up_id(
    http: httpx.AsyncClient, alice: Account, bob: Account, database: Database
) -> None:
    """The attack: Alice signs a revocation of Bob's keys under a device id she never had."""
    bobs = next(iter(bob.devices.values()))
    stolen = Device(alice.user_id, new_device_id(), signing=bobs.signing, curve25519=bobs.curve25519)
    assert await refused_revocation(http, alice, revocation_object(stolen, alice.master, 1), database) == "unknown_device"
    # Bob's device is untouched: it logs in, and nobody is shown a revocation of his keys.
    assert (await bob.login(bobs)).status_code == 200
    assert (await query(http, bob, alice.user_id)).get("revocations", []) == []


async def test_another_users_device_keys_can_not_be_revoked_under_an_own_id(
    http: httpx.AsyncClient, alice: Account, bob: Account, database: Database
) -> None:
    bobs = next(iter(bob.devices.values()))
    mine = Device(alice.user_id, alice.first, signing=bobs.signing, curve25519=bobs.curve25519)
    assert await refused_revocation(http, alice, revocation_object(mine, alice.master, 1), database) == "bad_key_object"
    half = Device(alice.user_id, alice.first, signing=alice.devices[alice.first].signing, curve25519=bobs.curve25519)
    assert await refused_revocation(http, alice, revocation_object(half, alice.master, 1), database) == "bad_key_object"


async def test_a_revocation_with_the_same_key_twice_is_refused(
    http: httpx.AsyncClient, alice: Account, database: Database
) -> None:
    """Checked before anything else, so even under an id nobody has it says what is wrong."""
    gone = list(alice.devices.values())[1]
    same = Device(alice.user_id, new_device_id(), signing=gone.signing, curve25519=gone.ed25519)
    assert await refused_revocation(http, alice, revocation_object(same, alice.master, 1), database) == "bad_key_object"


async def test_a_removed_device_can_still_be_revoked_with_its_own_keys(
    http: httpx.AsyncClient, alice: Account, database: Database
) -> None:
    keep, gone = list(alice.devices.values())
    resp = await http.delete(f"/v1/devices/{gone.device_id}", headers=alice.auth(keep.device_id))
    assert resp.status_code == 200, resp.text
    other = Device(alice.user_id, gone.device_id)
    wrong = await http.post(
        "/v1/keys/revoke", json={"revocation": revocation_object(other, alice.master, 1)}, headers=alice.auth(keep.device_id)
    )
    assert code(wrong) == "bad_key_object"
    revocation = revocation_object(gone, alice.master, 1)
    resp = await http.post("/v1/keys/revoke", json={"revocation": revocation}, headers=alice.auth(keep.device_id))
    assert resp.status_code == 200, resp.text
    assert (await query(http, alice, alice.user_id))["revocations"] == [revocation]


async def test_revocations_per_user_are_capped(http: httpx.AsyncClient, alice: Account, database: Database) -> None:
    """Each revocation is kept for good, shown in every key query and announced in every room: at most 1000."""
    async with database.write() as tx:
        rows = [
            {
                "user_id": alice.user_id,
                "device_id": f"OLD{i:07d}",
                "ed25519": f"E{i}",
                "curve25519": f"C{i}",
                "master_key_version": 1,
                "revocation_json": "{}",
                "ts": 0,
                "created_at": 0,
            }
            for i in range(MAX_REVOCATIONS)
        ]
        await tx.execute(insert(device_revocations), rows)
    gone = list(alice.devices.values())[1]
    resp = await http.post("/v1/keys/revoke", json={"revocation": revocation_object(gone, alice.master, 1)}, headers=alice.auth())
    assert code(resp) == "too_many_keys" and resp.status_code == 400
    assert resp.json()["error"]["details"] == {"max_revocations": MAX_REVOCATIONS}
    assert await count(database, device_revocations) == MAX_REVOCATIONS
    assert (await alice.login(gone)).status_code == 200


# ---- device_list events commit with the change --------------------------------------------------


async def test_each_device_change_is_announced_once(
    http: httpx.AsyncClient, alice: Account, bob: Account, room: str, database: Database
) -> None:
    added, resp = await alice.add_device()
    assert resp.status_code == 200
    keep, second = list(alice.devices)[:2]
    assert (await http.delete(f"/v1/devices/{added.device_id}", headers=alice.auth(keep))).status_code == 200
    del alice.devices[added.device_id], alice.device_objects[added.device_id]
    new, body = alice.rotation_body()
    assert (await alice.rotate(body, new, keep)).status_code == 200
    revocation = revocation_object(alice.devices[second], alice.master, 2)
    assert (await http.post("/v1/keys/revoke", json={"revocation": revocation}, headers=alice.auth(keep))).status_code == 200
    assert await device_list_events(http, bob) == [
        {"user_id": alice.user_id, "device_id": added.device_id, "change": "added"},
        {"user_id": alice.user_id, "device_id": added.device_id, "change": "removed"},
        {"user_id": alice.user_id, "device_id": keep, "change": "rotated"},
        {"user_id": alice.user_id, "device_id": second, "change": "revoked"},
    ]
    assert room


class Injected(Exception):
    """A crash after the device change was written and before its announcement was."""


async def state(http: httpx.AsyncClient, database: Database, alice: Account) -> tuple[Any, ...]:
    shown = await query(http, alice, alice.user_id)
    return (
        shown["master_key"],
        shown["devices"],
        shown["rotations"],
        await count(database, device_revocations),
        await audit_events(database, alice.user_id),
    )


async def test_a_crash_before_the_announcement_leaves_no_device_change(
    http: httpx.AsyncClient, app: FastAPI, alice: Account, room: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep, second = list(alice.devices)
    me = Requester(alice.user_id, keep, "session", False)
    services = app.state.services
    before = await state(http, database, alice)

    async def boom(self: EventStore, tx: Any, rows: Any) -> None:
        raise Injected

    monkeypatch.setattr(EventStore, "insert_events", boom)
    extra = Device(alice.user_id, new_device_id())
    with pytest.raises(Injected):
        await services.keys.do_add_device(me, extra.keys_object(alice.master, 1), {}, {})
    with pytest.raises(Injected):
        await services.devices.do_remove(me, second)
    new, body = alice.rotation_body()
    with pytest.raises(Injected):
        await services.identity.do_rotate(me, services.identity.check_rotate(me, RotateRequest(**body)))
    revoke = RevokeRequest(revocation=revocation_object(alice.devices[second], alice.master, 1))
    with pytest.raises(Injected):
        await services.identity.do_revoke(me, services.identity.check_revoke(me, revoke))
    monkeypatch.undo()

    assert await state(http, database, alice) == before
    assert (await alice.login(alice.devices[second])).status_code == 200  # neither removed nor revoked
    assert room and new  # the room makes each change announce something; the key was never used


async def test_revoking_a_device_closes_its_open_websocket(http: httpx.AsyncClient, app: FastAPI, alice: Account) -> None:
    keep, gone = list(alice.devices.values())
    async with WebSocketSession(app, alice.tokens[gone.device_id]) as ws:
        await ws.send({"type": "ping"})
        await ws.wait_for(lambda: len(ws.frames) == 1)
        revocation = revocation_object(gone, alice.master, 1)
        resp = await http.post("/v1/keys/revoke", json={"revocation": revocation}, headers=alice.auth(keep.device_id))
        assert resp.status_code == 200, resp.text
        await ws.wait_for(lambda: ws.close_code is not None)  # at once, without another frame
    assert ws.close_code == 4401
