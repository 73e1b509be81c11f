"""A malicious member or sender can't wedge another device's sync, or pass off someone else's session."""

from __future__ import annotations

import json

from tests.support import insides
from tokenim.client import Client
from tokenim.core.encoding import b64encode
from tokenim.protocol.api import OkResponse as _Ok
from tokenim.protocol.api import SendResponse as _Sent
from tokenim.protocol.keys import OLM_ALGORITHM


async def test_a_poisoned_to_device_message_is_dropped_not_retried_forever(alice: Client, make_user) -> None:  # type: ignore[no-untyped-def]
    mallory = await make_user("mallory")
    bad = {
        "algorithm": OLM_ALGORITHM,
        "sender_key": mallory.keys.info().device_curve25519,
        "ciphertext": {alice.keys.info().device_curve25519: {"type": 1, "body": "AAAA"}},
    }
    weird = {
        "algorithm": OLM_ALGORITHM,
        "sender_key": mallory.keys.info().device_curve25519,
        "ciphertext": {alice.keys.info().device_curve25519: {"type": 0, "body": b64encode(b"\x00" * 40)}},
    }
    await insides(mallory).transport.post(
        "/v1/to_device", {"type": "m.room.encrypted", "messages": {alice.user_id: {alice.device_id: bad}}}, _Ok
    )
    await insides(mallory).transport.post(
        "/v1/to_device", {"type": "m.room.encrypted", "messages": {alice.user_id: {alice.device_id: weird}}}, _Ok
    )
    assert await alice.messages.sync() == []
    assert await alice.messages.sync() == []  # acknowledged: not delivered again
    # Alice still works with everyone else.
    room = (await mallory.rooms.direct("@alice")).room_id
    await mallory.messages.send_text(room, "sorry")
    assert [m.body for m in await alice.messages.sync()] == ["sorry"]


async def test_a_deeply_nested_or_malformed_message_is_a_warning(alice: Client, bob: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    await alice.messages.share_room_key(room)
    out = insides(alice).machine.rooms.outbound[room]
    deep = ('{"room_id":' + json.dumps(room) + ',"type":"m.text","body":' + "[" * 5000 + "]" * 5000 + "}").encode()
    content = {
        "algorithm": "tokenim.megolm.v1.aes-sha2",
        "ciphertext": out.session.encrypt(deep).to_base64(),
        "session_id": out.session.session_id,
        "sender_key": alice.keys.info().device_curve25519,
        "device_id": alice.device_id,
    }
    out.message_count += 1
    await insides(alice).transport.request(
        "PUT", f"/v1/rooms/{room}/send/deep1", _Sent, body={"type": "m.room.encrypted", "content": content}
    )
    await alice.messages.send_content(room, {"type": "m.file", "body": "x", "file": {}})
    await alice.messages.send_text(room, "still fine")
    got = await bob.messages.sync()
    assert [m.warning is not None for m in got] == [True, True, False]
    assert got[-1].body == "still fine" and all(m.body is None for m in got[:2])
