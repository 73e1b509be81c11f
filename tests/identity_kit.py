"""Signed identity objects for tests, made with real Ed25519 keys and no client: master keys, devices,
rotations and revocations, so protocol, trust and server tests build chains (good and bad) directly."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import httpx

from tokenim.core.ids import new_device_id
from tokenim.core.signing import SigningKey, sign_json
from tokenim.protocol.auth import login_challenge_payload
from tokenim.protocol.identity import REVOCATION_TYPE, ROTATION_TYPE
from tokenim.protocol.keys import DEVICE_ALGORITHMS

T0 = 1_800_000_000_000


def master_key_object(user_id: str, key: SigningKey, version: int, ts: int = T0) -> dict[str, Any]:
    pub = key.public_key
    obj = {"user_id": user_id, "usage": ["master"], "keys": {f"ed25519:{pub}": pub}, "version": version, "created_at": ts}
    return sign_json(obj, user_id, pub, key)


def rotation_object(
    user_id: str, old: SigningKey, old_version: int, new: SigningKey, new_version: int | None = None, ts: int = T0
) -> dict[str, Any]:
    """A rotation signed by the old and the new key (tests remove or spoil a signature to make bad ones)."""
    obj: dict[str, Any] = {
        "type": ROTATION_TYPE,
        "user_id": user_id,
        "old_key": old.public_key,
        "old_version": old_version,
        "new_key": new.public_key,
        "new_version": old_version + 1 if new_version is None else new_version,
        "ts": ts,
    }
    obj = sign_json(obj, user_id, old.public_key, old)
    return sign_json(obj, user_id, new.public_key, new)


@dataclass
class Device:
    """A device made of two real keys: Ed25519 for signing (as vodozemac's would be) and a Curve25519 stand-in."""

    user_id: str
    device_id: str
    signing: SigningKey = field(default_factory=SigningKey.generate)
    curve25519: str = field(default_factory=lambda: SigningKey.generate().public_key)

    @property
    def ed25519(self) -> str:
        return self.signing.public_key

    def keys_object(self, master: SigningKey, version: int, ts: int = T0) -> dict[str, Any]:
        obj = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": list(DEVICE_ALGORITHMS),
            "keys": {f"curve25519:{self.device_id}": self.curve25519, f"ed25519:{self.device_id}": self.ed25519},
            "master_key_version": version,
            "created_at": ts,
        }
        obj = sign_json(obj, self.user_id, self.device_id, self.signing)
        return sign_json(obj, self.user_id, master.public_key, master)

    def one_time_keys(self, n: int) -> dict[str, Any]:
        return {
            f"signed_curve25519:K{self.device_id}{i}": sign_json(
                {"key": SigningKey.generate().public_key}, self.user_id, self.device_id, self.signing
            )
            for i in range(n)
        }


def resign(device_object: dict[str, Any], user_id: str, new_master: SigningKey) -> dict[str, Any]:
    """The same device object with only the device's signature kept and the new master key's added."""
    obj = copy.deepcopy(device_object)
    device_id = obj["device_id"]
    obj["signatures"] = {user_id: {f"ed25519:{device_id}": obj["signatures"][user_id][f"ed25519:{device_id}"]}}
    return sign_json(obj, user_id, new_master.public_key, new_master)


def revocation_object(device: Device, master: SigningKey, version: int, ts: int = T0) -> dict[str, Any]:
    obj = {
        "type": REVOCATION_TYPE,
        "user_id": device.user_id,
        "device_id": device.device_id,
        "keys": {f"curve25519:{device.device_id}": device.curve25519, f"ed25519:{device.device_id}": device.ed25519},
        "master_key_version": version,
        "ts": ts,
    }
    return sign_json(obj, device.user_id, master.public_key, master)


@dataclass
class Account:
    """A registered user driven over raw HTTP: the master key chain and the devices, all held here."""

    http: httpx.AsyncClient
    user_id: str
    masters: list[SigningKey]
    devices: dict[str, Device]
    device_objects: dict[str, dict[str, Any]]
    tokens: dict[str, str]
    refresh_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def master(self) -> SigningKey:
        return self.masters[-1]

    @property
    def version(self) -> int:
        return len(self.masters)

    def auth(self, device_id: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[device_id or next(iter(self.devices))]}"}

    @property
    def first(self) -> str:
        return next(iter(self.devices))

    async def login(self, device: Device) -> httpx.Response:
        ident = {"user_id": self.user_id, "device_id": device.device_id}
        challenge = await self.http.post("/v1/login/challenge", json=ident)
        if challenge.status_code != 200:
            return challenge
        c = challenge.json()
        payload = login_challenge_payload(
            server_name=c["server_name"], user_id=self.user_id, device_id=device.device_id, nonce=c["nonce"]
        )
        resp = await self.http.post("/v1/login", json={**ident, "nonce": c["nonce"], "signature": device.signing.sign(payload)})
        if resp.status_code == 200:
            self.tokens[device.device_id] = resp.json()["access_token"]
            self.refresh_tokens[device.device_id] = resp.json()["refresh_token"]
        return resp

    async def add_device(self, device: Device | None = None) -> tuple[Device, httpx.Response]:
        device = device or Device(self.user_id, new_device_id())
        obj = device.keys_object(self.master, self.version)
        body = {"device_keys": obj, "one_time_keys": device.one_time_keys(2)}
        resp = await self.http.post("/v1/devices", json=body, headers=self.auth())
        if resp.status_code == 200:
            self.devices[device.device_id] = device
            self.device_objects[device.device_id] = obj
        return device, resp

    def rotation_body(self, new: SigningKey | None = None) -> tuple[SigningKey, dict[str, Any]]:
        """A correct rotation request to a new key (or `new`): the caller may spoil it before sending."""
        new = new or SigningKey.generate()
        body = {
            "master_key": master_key_object(self.user_id, new, self.version + 1),
            "rotation": rotation_object(self.user_id, self.master, self.version, new),
            "devices": [resign(o, self.user_id, new) for o in self.device_objects.values()],
        }
        return new, body

    async def rotate(self, body: dict[str, Any], new: SigningKey, device_id: str | None = None) -> httpx.Response:
        resp = await self.http.post("/v1/keys/rotate", json=body, headers=self.auth(device_id))
        if resp.status_code == 200:
            self.masters.append(new)
            self.device_objects = {o["device_id"]: o for o in body["devices"]}
        return resp


async def register(http: httpx.AsyncClient, username: str, email: str | None = None) -> Account:
    """Register over HTTP with fresh keys (and `email`, when given) and log the first device in."""
    user_id = f"@{username}:tokenim.test"
    master = SigningKey.generate()
    device = Device(user_id, new_device_id())
    obj = device.keys_object(master, 1)
    body = {
        "username": username,
        "master_key": master_key_object(user_id, master, 1),
        "device_keys": obj,
        "one_time_keys": device.one_time_keys(2),
    }
    if email is not None:
        body["email"] = email
    resp = await http.post("/v1/register", json=body)
    assert resp.status_code == 200, resp.text
    account = Account(http, user_id, [master], {device.device_id: device}, {device.device_id: obj}, {})
    assert (await account.login(device)).status_code == 200
    return account
