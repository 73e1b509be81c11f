"""What the CLI relies on in the SDK and server: distinct room names, lookups that create nothing, sessions
that end where they should, and message limits checked before anything is encrypted or sent."""

from __future__ import annotations

import httpx
import pytest

from tests.support import insides
from tokenim.client import Client
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import ChallengeResponse, TokenResponse
from tokenim.protocol.events import MAX_CONTENT_BYTES


async def _error(coro: object) -> TokenIMError:
    with pytest.raises(TokenIMError) as info:
        await coro  # type: ignore[misc]
    return info.value


async def test_a_second_room_with_a_name_already_used_is_refused(alice: Client, bob: Client) -> None:
    first = await alice.rooms.create("Plans", ["@bob"])
    err = await _error(alice.rooms.create(" plans "))
    assert err.code is ErrorCode.ROOM_NAME_TAKEN and first.room_id in err.message
    assert err.details == {"room_id": first.room_id}
    # bob is invited to "Plans": he can't make another one either, nor rename one of his to it.
    assert (await _error(bob.rooms.create("PLANS"))).code is ErrorCode.ROOM_NAME_TAKEN
    other = await bob.rooms.create("Other")
    assert (await _error(bob.rooms.rename(other.room_id, "plans"))).code is ErrorCode.ROOM_NAME_TAKEN
    await bob.rooms.rename(other.room_id, "Other")  # renaming a room to its own name is fine
    assert sorted(r.name for r in (await alice.rooms.all()).rooms) == ["Plans"]
    # The name-based lookup still finds exactly one room for everyone.
    assert await bob.rooms.resolve("plans") == first.room_id


async def test_an_ambiguous_name_lists_the_rooms_and_their_ids(alice: Client, bob: Client, carol: Client) -> None:
    # Two other people each invite bob to a room called "Lunch": the server can't stop that, the lookup says so.
    a = await alice.rooms.create("Lunch", ["@bob"])
    c = await carol.rooms.create("Lunch", ["@bob"])
    err = await _error(bob.rooms.resolve("Lunch"))
    assert err.code is ErrorCode.INVALID_REQUEST
    assert a.room_id in err.message and c.room_id in err.message
    assert {r["room_id"] for r in err.details["candidates"]} == {a.room_id, c.room_id}
    assert await bob.rooms.resolve(a.room_id) == a.room_id  # an id always works
    assert (await _error(bob.rooms.resolve("Dinner"))).code is ErrorCode.NOT_FOUND


async def test_an_invitation_never_shadows_a_room_you_are_in(alice: Client, bob: Client, carol: Client) -> None:
    """Found from outside: a stranger inviting bob to a room named like his own stopped every name-based
    command of his; the room he is in is meant, and `join` means the invitation."""
    mine = await bob.rooms.create("plans")
    theirs = await carol.rooms.create("plans", ["@bob"])
    assert await bob.rooms.resolve("plans") == mine.room_id
    assert await bob.rooms.resolve("\uff30\uff2c\uff21\uff2e\uff33") == mine.room_id  # compared as the server compares names
    assert await bob.rooms.resolve("plans", prefer="invite") == theirs.room_id
    # Two invitations and no joined room of that name: still ambiguous, listed.
    await alice.rooms.create("lunch", ["@bob"])
    await carol.rooms.create("lunch", ["@bob"])
    assert (await _error(bob.rooms.resolve("lunch"))).code is ErrorCode.INVALID_REQUEST


async def test_looking_up_a_person_creates_no_direct_chat(alice: Client, bob: Client) -> None:
    err = await _error(alice.rooms.resolve("@bob"))
    assert err.code is ErrorCode.NOT_FOUND and "no direct chat" in err.message
    assert (await alice.rooms.all()).rooms == [] and (await bob.rooms.all()).rooms == []
    room_id = await alice.rooms.resolve("@bob", create=True)
    assert await alice.rooms.resolve("@bob") == room_id
    assert await bob.rooms.resolve("@alice") == room_id


async def _extra_session(client: Client) -> str:
    """Log in once more behind the client's back: a second live session of the same account."""
    ident = {"user_id": client.user_id, "device_id": client.device_id}
    challenge = await insides(client).transport.post("/v1/login/challenge", ident, ChallengeResponse, auth=False)
    signature = insides(client).identity.sign_login_challenge(server_name=challenge.server_name, nonce=challenge.nonce)
    body = {**ident, "nonce": challenge.nonce, "signature": signature}
    return (await insides(client).transport.post("/v1/login", body, TokenResponse, auth=False)).access_token


async def _status(client: Client, token: str) -> int:
    return (await insides(client).transport.http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})).status_code


async def test_a_second_login_ends_the_first_session_on_the_server(alice: Client) -> None:
    first = alice.account.access_token().encode()
    assert first is not None
    await alice.account.login()
    assert await _status(alice, first.decode()) == 401
    assert (await alice.account.whoami()).user_id == alice.user_id


async def test_logout_all_ends_every_session_of_the_account(alice: Client, bob: Client) -> None:
    other = await _extra_session(alice)
    assert await _status(alice, other) == 200
    assert await alice.account.logout(everywhere=True) == 2
    assert await _status(alice, other) == 401
    assert not alice.account.logged_in
    assert (await _error(alice.account.whoami())).code is ErrorCode.NOT_LOGGED_IN
    assert (await bob.account.whoami()).user_id == bob.user_id  # nobody else's sessions


async def test_logout_keeps_the_session_when_the_server_cannot_be_reached(alice: Client) -> None:
    token = alice.account.access_token().encode()
    real = insides(alice).transport.http
    insides(alice).transport.http = httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=2)
    try:
        err = await _error(alice.account.logout())
    finally:
        await insides(alice).transport.http.aclose()
        insides(alice).transport.http = real
    assert err.code is ErrorCode.SERVER_UNREACHABLE and "Error" not in err.message
    assert alice.account.access_token().encode() == token  # still valid on the server: not forgotten here
    assert (await alice.account.whoami()).user_id == alice.user_id
    assert await alice.account.logout() == 1
    assert not alice.account.logged_in


async def test_an_empty_message_is_not_sent(alice: Client, bob: Client) -> None:
    room = await alice.rooms.create("Quiet", ["@bob"])
    for text in ("", "  \n\t "):
        assert (await _error(alice.messages.send_text(room.room_id, text))).code is ErrorCode.INVALID_REQUEST
    assert await alice.messages.history(room.room_id) == []


async def test_the_text_limit_is_the_encrypted_size_stated_in_characters(alice: Client, bob: Client) -> None:
    room = (await alice.rooms.create("Long", ["@bob"])).room_id
    await bob.rooms.join(room)
    # 50,000 bytes of text used to be refused as "over a 65,536-byte limit": the limit that matters is the
    # plaintext that fits once encrypted and base64-encoded, and the error states it for this text.
    await alice.messages.send_text(room, "x" * 48_000)
    err = await _error(alice.messages.send_text(room, "y" * 50_000))
    assert err.code is ErrorCode.BODY_TOO_LARGE
    fits = err.details["max_length"]
    assert 48_000 < fits < 50_000 and f"{fits:,} characters" in err.message and "50,000 characters" in err.message
    await alice.messages.send_text(room, "z" * fits)  # exactly the stated limit goes through
    assert (await _error(alice.messages.send_text(room, "z" * (fits + 1)))).code is ErrorCode.BODY_TOO_LARGE
    # Characters that JSON escapes weigh more: the limit is stated for this very text.
    err = await _error(alice.messages.send_text(room, "é" * 20_000))
    assert err.details["max_length"] < 10_000
    await bob.messages.sync()
    bodies = [m.body for m in await bob.messages.history(room)]
    assert [len(b or "") for b in bodies] == [48_000, fits]


async def test_server_size_check_matches_the_prediction(alice: Client, bob: Client) -> None:
    room = (await alice.rooms.create("Edge", ["@bob"])).room_id
    await alice.messages.share_room_key(room)
    for n in (0, 1, 15, 16, 17, 1000, 30_000):
        plaintext = {"type": "m.text", "body": "q" * n}
        predicted = insides(alice).machine.encrypted_size(room, plaintext)
        content = insides(alice).machine.encrypt_room_message(room, plaintext)
        assert predicted == sum(len(v) for v in content.values() if isinstance(v, str))
    assert MAX_CONTENT_BYTES == 65_536
