"""Rooms through the client SDK: groups, invitations, roles, direct chats and who may do what."""

from __future__ import annotations

import pytest

from tests.support import insides
from tokenim.client import Client
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import SendResponse
from tokenim.protocol.keys import MEGOLM_ALGORITHM


def _fake_ciphertext(device_id: str) -> dict[str, object]:
    """Content shaped like Megolm ciphertext: the server can't tell it from the real thing."""
    return {
        "algorithm": MEGOLM_ALGORITHM,
        "ciphertext": "AwgAEhA",
        "session_id": "session",
        "sender_key": "A" * 43,
        "device_id": device_id,
    }


async def _room_ids(client: Client) -> dict[str, str]:
    """room id -> membership, for the rooms the client is in or invited to."""
    return {r.room_id: r.membership for r in (await client.rooms.all()).rooms}


async def _error(coro: object) -> TokenIMError:
    with pytest.raises(TokenIMError) as info:
        await coro  # type: ignore[misc]
    return info.value


async def test_group_create_invite_join(alice: Client, bob: Client) -> None:
    room = await alice.rooms.create("Team", ["@bob"])
    assert (room.kind, room.name, room.membership, room.role) == ("group", "Team", "join", "admin")
    assert room.members == [alice.user_id]  # bob is invited, not yet joined

    invited = {r.room_id: r for r in (await bob.rooms.all()).rooms}
    assert invited[room.room_id].membership == "invite"
    assert invited[room.room_id].name == "Team"

    joined = await bob.rooms.join(room.room_id)
    assert (joined.membership, joined.role) == ("join", "member")
    assert sorted(joined.members) == sorted([alice.user_id, bob.user_id])
    assert (await _room_ids(alice))[room.room_id] == "join"
    assert (await _room_ids(bob))[room.room_id] == "join"

    # Joining twice is harmless.
    again = await bob.rooms.join(room.room_id)
    assert again.membership == "join"


async def test_join_needs_an_invitation(alice: Client, bob: Client, carol: Client) -> None:
    room = await alice.rooms.create("Private", ["@bob"])
    err = await _error(carol.rooms.join(room.room_id))
    assert err.code is ErrorCode.FORBIDDEN
    assert room.room_id not in await _room_ids(carol)
    err = await _error(carol.rooms.join("!doesnotexist"))
    assert err.code is ErrorCode.NOT_FOUND


async def test_members_list_roles(alice: Client, bob: Client, carol: Client) -> None:
    room = await alice.rooms.create("Roles", ["@bob", "@carol"])
    await bob.rooms.join(room.room_id)
    members = {m.user_id: (m.membership, m.role) for m in (await bob.rooms.members(room.room_id)).members}
    assert members == {
        alice.user_id: ("join", "admin"),
        bob.user_id: ("join", "member"),
        carol.user_id: ("invite", "member"),
    }
    # An invited user may look at the member list before joining.
    assert len((await carol.rooms.members(room.room_id)).members) == 3


async def test_rename_only_by_admin(alice: Client, bob: Client) -> None:
    room = await alice.rooms.create("Old name", ["@bob"])
    await bob.rooms.join(room.room_id)

    await alice.rooms.rename(room.room_id, "New name")
    assert {r.room_id: r.name for r in (await bob.rooms.all()).rooms}[room.room_id] == "New name"

    err = await _error(bob.rooms.rename(room.room_id, "Bob's room"))
    assert err.code is ErrorCode.FORBIDDEN
    assert {r.room_id: r.name for r in (await alice.rooms.all()).rooms}[room.room_id] == "New name"


async def test_remove_only_by_admin(alice: Client, bob: Client, carol: Client) -> None:
    room = await alice.rooms.create("Club", ["@bob", "@carol"])
    await bob.rooms.join(room.room_id)
    await carol.rooms.join(room.room_id)

    err = await _error(bob.rooms.remove(room.room_id, "@carol"))
    assert err.code is ErrorCode.FORBIDDEN
    err = await _error(bob.rooms.remove(room.room_id, "@alice"))
    assert err.code is ErrorCode.FORBIDDEN
    assert (await _room_ids(carol))[room.room_id] == "join"

    await alice.rooms.remove(room.room_id, "@carol")
    assert room.room_id not in await _room_ids(carol)
    members = {m.user_id: m.membership for m in (await alice.rooms.members(room.room_id)).members}
    assert members[carol.user_id] == "leave"
    # Carol is no longer a member: she can't see the member list, send, or rejoin without a new invitation.
    assert (await _error(carol.rooms.members(room.room_id))).code is ErrorCode.FORBIDDEN
    assert (await _error(carol.rooms.join(room.room_id))).code is ErrorCode.FORBIDDEN
    # Removing someone who is not in the room is a bad request.
    assert (await _error(alice.rooms.remove(room.room_id, "@carol"))).code is ErrorCode.INVALID_REQUEST

    # A new invitation lets her back in.
    await alice.rooms.invite(room.room_id, "@carol")
    assert (await carol.rooms.join(room.room_id)).membership == "join"


async def test_leave(alice: Client, bob: Client) -> None:
    room = await alice.rooms.create("Leavers", ["@bob"])
    await bob.rooms.join(room.room_id)
    await bob.rooms.leave(room.room_id)
    assert room.room_id not in await _room_ids(bob)
    assert room.room_id in await _room_ids(alice)
    members = {m.user_id: m.membership for m in (await alice.rooms.members(room.room_id)).members}
    assert members == {alice.user_id: "join", bob.user_id: "leave"}
    # Leaving twice is refused.
    assert (await _error(bob.rooms.leave(room.room_id))).code is ErrorCode.FORBIDDEN
    # An invited user may decline by leaving.
    other = await alice.rooms.create("Declined", ["@bob"])
    await bob.rooms.leave(other.room_id)
    assert other.room_id not in await _room_ids(bob)


async def test_direct_room_is_find_or_create(alice: Client, bob: Client) -> None:
    first = await alice.rooms.direct("@bob")
    assert (first.kind, first.membership, first.role) == ("direct", "join", "admin")
    assert sorted(first.members) == sorted([alice.user_id, bob.user_id])
    again = await alice.rooms.direct("bob")
    other_way = await bob.rooms.direct("@alice")
    assert again.room_id == first.room_id == other_way.room_id
    assert other_way.role == "admin"
    assert [r.room_id for r in (await bob.rooms.all()).rooms] == [first.room_id]

    # After leaving, asking for the direct chat again rejoins the same room.
    await bob.rooms.leave(first.room_id)
    assert first.room_id not in await _room_ids(bob)
    back = await bob.rooms.direct("@alice")
    assert back.room_id == first.room_id
    assert back.membership == "join"

    assert (await _error(alice.rooms.direct("@alice"))).code is ErrorCode.INVALID_REQUEST


async def test_invite_to_direct_room_refused(alice: Client, bob: Client, carol: Client) -> None:
    room = await alice.rooms.direct("@bob")
    err = await _error(alice.rooms.invite(room.room_id, "@carol"))
    assert err.code is ErrorCode.INVALID_REQUEST
    assert room.room_id not in await _room_ids(carol)
    assert (await _error(alice.rooms.rename(room.room_id, "named"))).code is ErrorCode.INVALID_REQUEST


async def test_unknown_user(alice: Client, bob: Client) -> None:
    room = await alice.rooms.create("Ghosts")
    err = await _error(alice.rooms.invite(room.room_id, "@nobody"))
    assert err.code is ErrorCode.UNKNOWN_USER
    err = await _error(alice.rooms.create("Ghosts 2", ["@bob", "@nobody"]))
    assert err.code is ErrorCode.UNKNOWN_USER
    # The failed creation left nothing behind.
    assert "Ghosts 2" not in {r.name for r in (await alice.rooms.all()).rooms}
    assert (await bob.rooms.all()).rooms == []
    assert (await _error(alice.rooms.direct("@nobody"))).code is ErrorCode.UNKNOWN_USER


async def test_invite_only_by_members_and_not_twice(alice: Client, bob: Client, carol: Client) -> None:
    room = await alice.rooms.create("Members only", ["@bob"])
    # Bob is only invited: he can't invite others yet.
    assert (await _error(bob.rooms.invite(room.room_id, "@carol"))).code is ErrorCode.FORBIDDEN
    await bob.rooms.join(room.room_id)
    await bob.rooms.invite(room.room_id, "@carol")
    assert (await _room_ids(carol))[room.room_id] == "invite"
    assert (await _error(alice.rooms.invite(room.room_id, "@carol"))).code is ErrorCode.INVALID_REQUEST
    assert (await _error(alice.rooms.invite(room.room_id, "@bob"))).code is ErrorCode.INVALID_REQUEST


async def test_send_to_room_you_are_not_in(alice: Client, bob: Client, carol: Client) -> None:
    room = await alice.rooms.create("Closed", ["@bob"])
    # A stranger can't send, neither through the SDK nor with hand-made ciphertext.
    assert (await _error(carol.messages.send_text(room.room_id, "let me in"))).code is ErrorCode.FORBIDDEN
    raw = insides(carol).transport.request(
        "PUT",
        f"/v1/rooms/{room.room_id}/send/txn1",
        SendResponse,
        body={"type": "m.room.encrypted", "content": _fake_ciphertext(carol.device_id)},
    )
    assert (await _error(raw)).code is ErrorCode.FORBIDDEN
    # Invited but not joined is not enough either.
    assert (await _error(bob.messages.send_text(room.room_id, "early"))).code is ErrorCode.FORBIDDEN
    # Nor after leaving.
    await bob.rooms.join(room.room_id)
    await bob.messages.send_text(room.room_id, "in")
    await bob.rooms.leave(room.room_id)
    assert (await _error(bob.messages.send_text(room.room_id, "out"))).code is ErrorCode.FORBIDDEN
    # A room that does not exist is not found.
    missing = insides(carol).transport.request(
        "PUT",
        "/v1/rooms/!nosuchroom/send/txn2",
        SendResponse,
        body={"type": "m.room.encrypted", "content": _fake_ciphertext(carol.device_id)},
    )
    assert (await _error(missing)).code is ErrorCode.NOT_FOUND
    # Only Bob's one message made it.
    assert [m.body for m in await alice.messages.sync()] == ["in"]


async def test_resolve_target(alice: Client, bob: Client) -> None:
    team = await alice.rooms.create("team", ["@bob"])
    assert await alice.rooms.resolve("team") == team.room_id
    assert await alice.rooms.resolve(team.room_id) == team.room_id

    direct = await alice.rooms.resolve("@bob", create=True)
    assert direct == (await bob.rooms.direct("@alice")).room_id
    assert await alice.rooms.resolve(f"@bob:{insides(alice).store.get_meta('server_name')}") == direct

    assert (await _error(alice.rooms.resolve("nonexistent"))).code is ErrorCode.NOT_FOUND
    assert (await _error(alice.rooms.create("team"))).code is ErrorCode.ROOM_NAME_TAKEN
    # A room Bob is merely invited to resolves by name too.
    assert await bob.rooms.resolve("team") == team.room_id
    assert (await _error(alice.rooms.resolve("@Not A User"))).code is ErrorCode.INVALID_REQUEST
