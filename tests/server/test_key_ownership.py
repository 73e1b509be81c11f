"""A device's identity keys are its own: no device may publish a Curve25519 or Ed25519 key that another device
(of any user, current or removed) published before, on registration or when a device is added."""

from __future__ import annotations

from typing import Any

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text

from tests.server.served import JSON_HEADERS, auth
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.ids import UserId, new_device_id
from tokenim.core.signing import sign_json
from tokenim.crypto.device import DeviceIdentity
from tokenim.server.storage.database import MIGRATIONS_DIR, Database
from tokenim.server.storage.tables import device_identity_keys


def device_keys_with(ident: DeviceIdentity, now: int, *, curve25519: str | None = None) -> dict[str, Any]:
    """`ident`'s device keys object, with another Curve25519 key put in and signed again by device and master."""
    obj = ident.device_keys_object(now)
    if curve25519 is not None:
        obj["keys"][f"curve25519:{ident.device_id}"] = curve25519
    obj.pop("signatures")
    obj = sign_json(obj, ident.user_id, ident.device_id, ident)
    return sign_json(obj, ident.user_id, ident.master.public_key, ident.master)


async def add_device(http: httpx.AsyncClient, client: Client, device_keys: dict[str, Any]) -> httpx.Response:
    return await http.post("/v1/devices", json={"device_keys": device_keys}, headers=auth(client))


def assert_key_conflict(resp: httpx.Response, algorithm: str) -> None:
    assert resp.status_code == 409, resp.text
    error = resp.json()["error"]
    assert error["code"] == "key_conflict"
    assert f"{algorithm} key is already used by another device" in error["message"]


async def test_a_device_cannot_publish_another_users_curve25519_key(
    http: httpx.AsyncClient, alice: Client, bob: Client, clock: FakeClock
) -> None:
    mallory = DeviceIdentity.create(
        insides(alice).identity.user_id, new_device_id(), clock.now_ms(), master=insides(alice).identity.master
    )
    resp = await add_device(http, alice, device_keys_with(mallory, clock.now_ms(), curve25519=insides(bob).identity.curve25519))
    assert_key_conflict(resp, "curve25519")
    # Nor one of the user's own other devices.
    resp = await add_device(http, alice, device_keys_with(mallory, clock.now_ms(), curve25519=insides(alice).identity.curve25519))
    assert_key_conflict(resp, "curve25519")
    # With keys of its own it is fine.
    assert (await add_device(http, alice, device_keys_with(mallory, clock.now_ms()))).status_code == 200


async def test_registration_cannot_take_another_devices_key(http: httpx.AsyncClient, bob: Client, clock: FakeClock) -> None:
    ident = DeviceIdentity.create(UserId("@mallory:tokenim.test"), new_device_id(), clock.now_ms())
    body = {
        "username": "mallory",
        "master_key": ident.master_key_object(),
        "device_keys": device_keys_with(ident, clock.now_ms(), curve25519=insides(bob).identity.curve25519),
    }
    assert_key_conflict(await http.post("/v1/register", json=body, headers=JSON_HEADERS), "curve25519")
    body["device_keys"] = device_keys_with(ident, clock.now_ms())
    assert (await http.post("/v1/register", json=body, headers=JSON_HEADERS)).status_code == 200, "nothing was left half-made"


async def test_the_keys_of_a_removed_device_stay_taken(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    second = DeviceIdentity.create(
        insides(alice).identity.user_id, new_device_id(), clock.now_ms(), master=insides(alice).identity.master
    )
    assert (await add_device(http, alice, device_keys_with(second, clock.now_ms()))).status_code == 200
    assert (await http.delete(f"/v1/devices/{second.device_id}", headers=auth(alice))).status_code == 200
    # The same Olm account (same Curve25519 and Ed25519 keys) under a new device id, or under its old one.
    again = DeviceIdentity(second.user_id, new_device_id(), second.account, second.master, 1, clock.now_ms())
    assert_key_conflict(await add_device(http, alice, device_keys_with(again, clock.now_ms())), "curve25519")
    assert_key_conflict(await add_device(http, alice, device_keys_with(second, clock.now_ms())), "curve25519")


async def test_the_same_key_for_curve25519_and_ed25519_is_refused(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock
) -> None:
    second = DeviceIdentity.create(
        insides(alice).identity.user_id, new_device_id(), clock.now_ms(), master=insides(alice).identity.master
    )
    resp = await add_device(http, alice, device_keys_with(second, clock.now_ms(), curve25519=second.ed25519))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_key_object", resp.text


async def test_the_migration_records_the_keys_of_existing_devices(database: Database, alice: Client, bob: Client) -> None:
    async with database.write() as tx:
        await tx.execute(text("DELETE FROM device_identity_keys"))
        await tx.run_sync(lambda sync: _run_alembic(sync, "downgrade", "0003"))
        await tx.run_sync(lambda sync: _run_alembic(sync, "upgrade", "head"))
    async with database.read() as tx:
        rows = {(r.public_key, r.algorithm, r.user_id) for r in await tx.execute(select(device_identity_keys))}
    assert rows == {(insides(c).identity.curve25519, "curve25519", c.user_id) for c in (alice, bob)} | {
        (insides(c).identity.ed25519, "ed25519", c.user_id) for c in (alice, bob)
    }


def _run_alembic(connection: Any, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)
