"""Inputs an outside attacker found too loosely checked, each refused with its documented code (SQLite and
PostgreSQL): backup manifest counts and strict metadata, opaque bodies in canonical unpadded base64, path
integers in plain digits, audit peers that are user ids, and integer bounds that /openapi.json states."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.test_backup_routes import METADATA, manifest, upload
from tests.support import client_auth
from tokenim.client import Client


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def test_a_manifest_counting_more_than_the_limit_is_too_many_keys(http: httpx.AsyncClient, alice: Client) -> None:
    auth = client_auth(alice)
    assert (await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)).status_code == 200
    for count in (5001, 2**53 - 1):
        resp = await http.put("/v1/backup/1/keys", json=upload(0, manifest(1, 1, count), []), headers=auth)
        assert (resp.status_code, error_code(resp)) == (400, "too_many_keys"), count
    assert (await http.get("/v1/backup", headers=auth)).json()["manifest"] is None


async def test_backup_metadata_must_name_its_kdf_even_when_null(http: httpx.AsyncClient, alice: Client) -> None:
    auth = client_auth(alice)
    without = {k: v for k, v in METADATA.items() if k != "kdf"}
    resp = await http.post("/v1/backup", json={"metadata": without}, headers=auth)
    assert (resp.status_code, error_code(resp)) == (400, "invalid_request")
    assert (await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)).status_code == 200


@pytest.mark.parametrize("text", ["A", "AAAAA", "AB", "AAA=", "AAB", "QQ"])
async def test_opaque_bodies_are_canonical_unpadded_base64(http: httpx.AsyncClient, alice: Client, text: str) -> None:
    # "A" and "AAAAA" can't be base64 at all; "AB" and "AAB" have stray bits; "AAA=" is padded; "QQ" is fine.
    auth = client_auth(alice)
    await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)
    item = [{"entry_id": "E" * 43, "ciphertext": text}]
    resp = await http.put("/v1/backup/1/keys", json=upload(0, manifest(1, 1, 1), item), headers=auth)
    opened = (await http.post("/v1/link", json={"user_id": alice.user_id})).json()
    link = await http.put(
        f"/v1/link/{opened['link_id']}/messages/1",
        json={"body": text},
        headers={"Authorization": f"Bearer {opened['token']}"},
    )
    if text == "QQ":
        assert (resp.status_code, link.status_code) == (200, 200), (resp.text, link.text)
    else:
        assert (error_code(resp), error_code(link)) == ("invalid_request", "invalid_request")


@pytest.mark.parametrize("number", ["+1", "01", "1.0", "1e0", " 1", "-1", "\u0661"])
async def test_path_integers_are_plain_digits(http: httpx.AsyncClient, alice: Client, number: str) -> None:
    auth = client_auth(alice)
    await http.post("/v1/backup", json={"metadata": METADATA}, headers=auth)
    opened = (await http.post("/v1/link", json={"user_id": alice.user_id})).json()
    new = {"Authorization": f"Bearer {opened['token']}"}
    answers = [
        await http.get(f"/v1/backup/{number}/keys", headers=auth),
        await http.delete(f"/v1/backup/{number}", headers=auth),
        await http.put(f"/v1/link/{opened['link_id']}/messages/{number}", json={"body": "QQ"}, headers=new),
        await http.get(f"/v1/link/{opened['link_id']}/messages?after={number}", headers=new),
    ]
    assert [(r.status_code, error_code(r)) for r in answers] == [(400, "invalid_request")] * 4
    assert (await http.get("/v1/backup", headers=auth)).json()["version"] == 1  # nothing was deleted


@pytest.mark.parametrize("peer", ["@bob:tokenim.test\u202e", "@bo\u200fb:tokenim.test", "@bob:tokenim.test\n", "@bob\x1b[0m:t"])
async def test_a_verified_peer_must_be_a_plain_user_id(http: httpx.AsyncClient, alice: Client, peer: str) -> None:
    body: dict[str, Any] = {"event": "person.verified", "details": {"peer": peer, "method": "sas"}}
    resp = await http.post("/v1/audit/events", json=body, headers=client_auth(alice))
    assert (resp.status_code, error_code(resp)) == (400, "invalid_request")
    body["details"]["peer"] = "@bob:tokenim.test"
    assert (await http.post("/v1/audit/events", json=body, headers=client_auth(alice))).status_code == 200


async def test_integer_parameters_state_their_bounds_as_json_schema(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/openapi.json")).json()
    limit = next(p for p in doc["paths"]["/v1/audit"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                schema = param["schema"]
                assert "ge" not in schema and "le" not in schema, (path, param["name"])
