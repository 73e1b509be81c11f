"""docs/protocol.md and the server agree: what the docs refuse the server refuses, with the documented code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.ids import UserId, new_device_id
from tokenim.core.signing import sign_json
from tokenim.crypto.device import DeviceIdentity


def _auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.account.access_token()}"}


def _error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert err["code"] == code and err["status"] == status, err
    return err


def _resign(obj: dict[str, Any], ident: DeviceIdentity, *, by_device: bool) -> dict[str, Any]:
    """Sign `obj` again after a change, as its owner would, so only the change itself can be refused."""
    obj = {k: v for k, v in obj.items() if k != "signatures"}
    if by_device:
        obj = sign_json(obj, ident.user_id, ident.device_id, ident._signer)
    return sign_json(obj, ident.user_id, ident.master.public_key, ident.master)


def _registration(clock: FakeClock, username: str, *, master_ms: int | None = None) -> tuple[DeviceIdentity, dict[str, Any]]:
    ident = DeviceIdentity.create(UserId(f"@{username}:tokenim.test"), new_device_id(), clock.now_ms())
    if master_ms is not None:
        ident.master_created_at = master_ms
    return ident, {
        "username": username,
        "master_key": ident.master_key_object(),
        "device_keys": ident.device_keys_object(clock.now_ms()),
    }


def _extra_master_member(ident: DeviceIdentity, body: dict[str, Any]) -> None:
    body["master_key"] = _resign({**body["master_key"], "comment": "x"}, ident, by_device=False)


def _unsigned_master_member(ident: DeviceIdentity, body: dict[str, Any]) -> None:
    body["master_key"]["unsigned"] = {"note": "not covered by any signature"}


def _unsigned_device_member(ident: DeviceIdentity, body: dict[str, Any]) -> None:
    body["device_keys"]["unsigned"] = {"device_display_name": "relayed to everyone, signed by no one"}


def _device_created_in_seconds(ident: DeviceIdentity, body: dict[str, Any]) -> None:
    body["device_keys"] = ident.device_keys_object(1_800_000_000)


def _padded_device_key(ident: DeviceIdentity, body: dict[str, Any]) -> None:
    dk = body["device_keys"]
    name = f"curve25519:{ident.device_id}"
    dk["keys"][name] += "="
    body["device_keys"] = _resign(dk, ident, by_device=True)


BAD_REGISTRATIONS: list[tuple[str, Callable[[DeviceIdentity, dict[str, Any]], None], str]] = [
    ("extra member in the master key", _extra_master_member, "bad_key_object"),
    ("unsigned member in the master key", _unsigned_master_member, "bad_key_object"),
    ("unsigned member in the device keys", _unsigned_device_member, "bad_key_object"),
    ("device created_at in seconds", _device_created_in_seconds, "bad_key_object"),
    ("padded base64 key", _padded_device_key, "bad_key_object"),
]


@pytest.mark.parametrize(("label", "mutate", "code"), BAD_REGISTRATIONS, ids=[b[0] for b in BAD_REGISTRATIONS])
async def test_key_objects_are_as_strict_as_the_docs(
    http: httpx.AsyncClient, clock: FakeClock, label: str, mutate: Callable[[DeviceIdentity, dict[str, Any]], None], code: str
) -> None:
    ident, body = _registration(clock, "mallory")
    mutate(ident, body)
    _error(await http.post("/v1/register", json=body), 400, code)
    ident, body = _registration(clock, "mallory")  # the same account, well formed, is fine
    assert (await http.post("/v1/register", json=body)).status_code == 200


async def test_master_key_created_at_in_seconds_is_refused(http: httpx.AsyncClient, clock: FakeClock) -> None:
    _ident, body = _registration(clock, "mallory", master_ms=1_800_000_000)
    _error(await http.post("/v1/register", json=body), 400, "bad_key_object")


async def test_a_padded_signature_is_refused(http: httpx.AsyncClient, clock: FakeClock) -> None:
    ident, body = _registration(clock, "mallory")
    sigs = body["master_key"]["signatures"][ident.user_id]
    for key_id in sigs:
        sigs[key_id] += "=="
    _error(await http.post("/v1/register", json=body), 400, "bad_signature")


ROOM_ROUTES = [
    ("GET", "/v1/rooms/{room}", None),
    ("GET", "/v1/rooms/{room}/members", None),
    ("GET", "/v1/rooms/{room}/history", None),
    ("POST", "/v1/rooms/{room}/invite", {"user_id": "@bob:tokenim.test"}),
    ("POST", "/v1/rooms/{room}/join", None),
    ("POST", "/v1/rooms/{room}/leave", None),
    ("POST", "/v1/rooms/{room}/remove", {"user_id": "@bob:tokenim.test"}),
    ("POST", "/v1/rooms/{room}/name", {"name": "x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROOM_ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROOM_ROUTES])
async def test_a_well_formed_room_id_that_names_no_room_is_not_found(
    http: httpx.AsyncClient, alice: Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    url = path.format(room="!NoSuchRoomAtAll")
    resp = await http.request(method, url, json=body, headers=_auth(alice))
    _error(resp, 404, "not_found")
    # and a malformed one is invalid_request, quoting the id rule as it is (not lower-cased)
    resp = await http.request(method, path.format(room="!bad*id"), json=body, headers=_auth(alice))
    err = _error(resp, 400, "invalid_request")
    assert "A-Za-z0-9" in err["message"], err["message"]


async def test_claim_returns_the_key_id_as_uploaded(http: httpx.AsyncClient, alice: Client, bob: Client) -> None:
    """The id a claim returns is the map key the owner uploaded, `signed_curve25519:<id>`."""
    resp = await http.post("/v1/keys/claim", json={"devices": {bob.user_id: [bob.device_id]}}, headers=_auth(alice))
    assert resp.status_code == 200, resp.text
    claimed = resp.json()["one_time_keys"][bob.user_id][bob.device_id]
    assert claimed["key_id"].startswith("signed_curve25519:"), claimed
    assert len(claimed["key_id"]) > len("signed_curve25519:")
