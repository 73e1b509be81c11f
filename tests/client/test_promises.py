"""Client checks that docs/protocol.md and docs/threat-model.md promise, against a server that lies:
the client refuses to sign a login challenge naming another server, refuses a claimed one-time key whose
signature does not verify, and acknowledges the to-device messages it drops as malformed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import vodozemac

from tests.conftest import MakeUser
from tests.support import LyingServer, add_device, bearer, client_auth, insides, login_token
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.encoding import b64encode
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import OkResponse
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import OLM_ALGORITHM, parse_one_time_keys


@pytest.fixture
def lying(app) -> LyingServer:  # type: ignore[no-untyped-def]
    return LyingServer(httpx.ASGITransport(app=app))


@pytest.fixture
def transport(lying: LyingServer) -> LyingServer:
    """Every client of these tests talks to the real server through `lying`, which passes answers on unchanged
    until a test tells it what to rewrite."""
    return lying


# ---- login: the client signs only a challenge that names its own server ------------------------------


async def test_the_client_refuses_to_sign_a_challenge_naming_another_server(alice: Client, lying: LyingServer) -> None:
    lying.rewrites["/v1/login/challenge"] = lambda _req, body: body | {"server_name": "evil.example"}
    lying.requests.clear()
    with pytest.raises(TokenIMError) as err:
        await alice.account.login()
    assert err.value.code is ErrorCode.BAD_RESPONSE
    assert "evil.example" in err.value.message
    # Nothing signed left the device.
    assert lying.requests == [("POST", "/v1/login/challenge")]
    # With the real server name it logs in.
    del lying.rewrites["/v1/login/challenge"]
    assert (await alice.account.login()).user_id == alice.user_id


# ---- Olm: a claimed one-time key must carry the device's signature -----------------------------------


def _forge_one_key(target_device: str, attacker_key: str) -> Any:
    """Swap the claimed key of one device for the server's own key, keeping the device's signature."""

    def rewrite(_req: httpx.Request, body: dict[str, Any]) -> dict[str, Any]:
        for by_device in body["one_time_keys"].values():
            if target_device in by_device:
                by_device[target_device]["key"]["key"] = attacker_key
        return body

    return rewrite


async def test_a_claimed_one_time_key_that_does_not_verify_starts_no_session(
    alice: Client, bob: Client, lying: LyingServer, clock: FakeClock
) -> None:
    second = await add_device(bob, clock)
    attacker = vodozemac.Account()
    lying.rewrites["/v1/keys/claim"] = _forge_one_key(bob.device_id, attacker.curve25519_key.to_base64())
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.send_text(room, "for bob's devices only")

    devices = {d.device_id: d for d in await alice.keys.devices_of([bob.user_id])}
    assert set(devices) == {bob.device_id, second.device_id}
    # The forged key was refused: no session with that device, so it got no room key ...
    assert not insides(alice).machine.olm.has_session(devices[bob.device_id])
    assert [m.warning is not None for m in await bob.messages.sync()] == [True]
    # ... while Bob's other device, whose key was genuine, got one.
    assert insides(alice).machine.olm.has_session(devices[second.device_id])


async def test_a_one_time_key_signed_by_another_device_is_refused(alice: Client, bob: Client, carol: Client) -> None:
    """Unit level: the machine refuses a key (even a real one) signed by someone else than its device."""
    bob_keys = (await alice.keys.devices_of([bob.user_id]))[0]
    carols = insides(carol).identity.keys_to_upload(0, need_fallback=False)
    otk = parse_one_time_keys(carols.one_time_keys, fallback=False)[0]
    with pytest.raises(TokenIMError) as err:
        insides(alice).machine.start_session(bob_keys, otk)
    assert err.value.code is ErrorCode.BAD_SIGNATURE
    assert not insides(alice).machine.olm.has_session(bob_keys)


# ---- to-device: what the client drops as malformed is acknowledged, once ------------------------------


def _poisoned(mine: str, sender: Client) -> list[dict[str, Any]]:
    """Olm content the server relays (right sender key and shape, addressed to the key `mine`) that is no Olm
    message: a normal message with no session behind it, and pre-key messages of garbage."""
    return [
        {
            "algorithm": OLM_ALGORITHM,
            "sender_key": sender.keys.info().device_curve25519,
            "ciphertext": {mine: {"type": 1, "body": "AAAA"}},
        },
        {
            "algorithm": OLM_ALGORITHM,
            "sender_key": sender.keys.info().device_curve25519,
            "ciphertext": {mine: {"type": 0, "body": b64encode(b"\x00" * 40)}},
        },
        {
            "algorithm": OLM_ALGORITHM,
            "sender_key": sender.keys.info().device_curve25519,
            "ciphertext": {mine: {"type": 0, "body": "AA"}},
        },
    ]


async def _queued(http: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = await http.get("/v1/sync", params={"to_device_after": 0}, headers=headers)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["to_device"])


async def test_dropped_to_device_messages_are_acknowledged_on_that_device_only(
    alice: Client, make_user: MakeUser, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    mallory = await make_user("mallory")
    second = await add_device(alice, clock)
    second_headers = bearer(await login_token(http, second))
    for content, other in zip(
        _poisoned(alice.keys.info().device_curve25519, mallory), _poisoned(second.curve25519, mallory), strict=True
    ):
        messages = {alice.user_id: {alice.device_id: content, second.device_id: other}}
        await insides(mallory).transport.post("/v1/to_device", {"type": ENCRYPTED, "messages": messages}, OkResponse)
    assert len(await _queued(http, client_auth(alice))) == 3

    assert await alice.messages.sync() == []
    # Dropped and acknowledged: the server no longer holds them for this device, even from position 0 ...
    assert await _queued(http, client_auth(alice)) == []
    # ... and the other device, which has not synced, still has all of its own.
    assert len(await _queued(http, second_headers)) == 3
    # Alice still reads everyone else.
    room = (await mallory.rooms.direct("@alice")).room_id
    await mallory.messages.send_text(room, "sorry")
    assert [m.body for m in await alice.messages.sync()] == ["sorry"]
    assert await _queued(http, client_auth(alice)) == []
