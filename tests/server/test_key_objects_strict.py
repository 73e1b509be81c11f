"""The server stores and relays only what it checked in key objects: no signature entry it did not verify, the
`fallback` flag exactly as the schema says, and at most 100 one-time keys on registration as on upload."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.server.served import JSON_HEADERS, auth
from tests.server.test_errors import count_rows, new_identity, registration_body
from tests.support import insides
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.encoding import b64encode
from tokenim.core.limits import MAX_ONE_TIME_KEYS_PER_UPLOAD
from tokenim.core.signing import sign_json
from tokenim.protocol.wire import OneTimeKeyObject
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import one_time_keys, users

FAKE = b64encode(bytes(64))


def bad_key_object(resp: httpx.Response, words: str) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "bad_key_object" and words in error["message"], error


def fresh_keys(client: Client, n: int, *, fallback: bool = False) -> dict[str, Any]:
    insides(client).identity.account.generate_one_time_keys(n)
    upload = insides(client).identity.keys_to_upload(10**6, need_fallback=fallback)
    return upload.fallback_keys if fallback else upload.one_time_keys


@pytest.mark.parametrize(
    "extra",
    [
        {"@bob:tokenim.test": {"ed25519:BOBDEVICE1": FAKE}},
        {"@alice:tokenim.test": {"ed25519:\u0000\u202eX": FAKE}},
        {"@alice:tokenim.test": {"ed25519:X": "not base64 \u202e"}},
        {"@alice:tokenim.test": {f"ed25519:F{i}": FAKE for i in range(2000)}},
    ],
    ids=["another user", "nul and bidi", "not base64", "2000 entries"],
)
async def test_unchecked_signatures_on_a_one_time_key_are_refused(
    http: httpx.AsyncClient, alice: Client, database: Database, extra: dict[str, Any]
) -> None:
    keys = fresh_keys(alice, 1)
    before = await count_rows(database, one_time_keys)
    for obj in keys.values():
        for signer, entries in copy.deepcopy(extra).items():
            obj["signatures"].setdefault(signer, {}).update(entries)
    resp = await http.post("/v1/keys/upload", json={"one_time_keys": keys}, headers=auth(alice))
    bad_key_object(resp, "nobody checks")
    assert await count_rows(database, one_time_keys) == before


async def test_unchecked_signatures_on_master_and_device_keys_are_refused(
    http: httpx.AsyncClient, clock: FakeClock, database: Database
) -> None:
    ident = new_identity("dave", clock)
    for member in ("master_key", "device_keys"):
        body = registration_body(ident, "dave", clock.now_ms())
        body[member]["signatures"]["@eve:tokenim.test"] = {"ed25519:EVEDEVICE1": FAKE}
        bad_key_object(await http.post("/v1/register", json=body, headers=JSON_HEADERS), "nobody checks")
    assert await count_rows(database, users) == 0


async def test_the_fallback_flag_is_what_the_schema_says(http: httpx.AsyncClient, alice: Client) -> None:
    schema = OneTimeKeyObject.model_json_schema()["properties"]["fallback"]  # as /openapi.json shows it
    assert schema.get("const") is True and "anyOf" not in schema, schema  # true or absent; never null
    (key_id, obj), *_ = fresh_keys(alice, 1).items()
    for value in (None, False):
        unsigned = {"key": obj["key"], "fallback": value}
        signed = sign_json(unsigned, alice.user_id, alice.device_id, insides(alice).identity)
        resp = await http.post("/v1/keys/upload", json={"one_time_keys": {key_id: signed}}, headers=auth(alice))
        bad_key_object(resp, 'a one-time key has no "fallback" member')
    ((fb_id, fb),) = fresh_keys(alice, 0, fallback=True).items()
    unflagged = sign_json({"key": fb["key"]}, alice.user_id, alice.device_id, insides(alice).identity)
    resp = await http.post("/v1/keys/upload", json={"fallback_keys": {fb_id: unflagged}}, headers=auth(alice))
    bad_key_object(resp, 'a fallback key must hold "fallback": true')


async def test_registration_takes_at_most_100_one_time_keys_like_upload(
    http: httpx.AsyncClient, clock: FakeClock, database: Database
) -> None:
    body = registration_body(new_identity("dave", clock), "dave", clock.now_ms(), otks=MAX_ONE_TIME_KEYS_PER_UPLOAD + 1)
    body["fallback_keys"] = {}
    resp = await http.post("/v1/register", json=body, headers=JSON_HEADERS)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "too_many_keys", resp.text
    assert await count_rows(database, users) == 0
