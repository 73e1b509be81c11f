"""The WebSocket accepts exactly the client frames /openapi.json describes (`Ws*Frame`): a member the
schema names works (`device_seq` on `send` was used by the server but missing from the schema), and a
member it does not name is refused, so the published schema and the server cannot drift apart again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.server.served import auth, websocket_session
from tests.server.test_content import megolm
from tokenim.client import Client
from tokenim.protocol.wire import CLIENT_FRAMES


async def test_every_member_the_schema_names_is_accepted(app: FastAPI, alice: Client, bob: Client) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    send = {"type": "send", "room_id": room, "txn_id": "t1", "content": megolm(bob), "device_seq": 7}
    schema = CLIENT_FRAMES.json_schema()
    named = {ref.rsplit("/", 1)[-1]: set(schema["$defs"][ref.rsplit("/", 1)[-1]]["properties"]) for ref in
             (one["$ref"] for one in schema["oneOf"])}  # fmt: skip
    assert named["WsSendFrame"] == set(send)  # this test sends every member of the schema
    frames = await websocket_session(app, bob, [send], until=("sent", "error"))
    assert frames[-1]["type"] == "sent", frames[-1]
    again = await websocket_session(app, bob, [{**send, "txn_id": "t2"}], until=("sent", "error"))
    assert again[-1]["error"]["code"] == "profile_forked"  # the number is used, not ignored


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ping", "extra": 1},
        {"type": "sync", "since": 0, "to_device_after": 0, "filter": {}},
        {"type": "ack_to_device", "up_to": 0, "all": True},
    ],
)
async def test_a_member_the_schema_does_not_name_is_refused(app: FastAPI, alice: Client, frame: dict[str, Any]) -> None:
    frames = await websocket_session(app, alice, [frame], until=("error", "synced", "pong"))
    assert frames[-1]["type"] == "error", frames
    assert frames[-1]["error"]["code"] == "invalid_request"
    assert "is not an accepted field" in frames[-1]["error"]["message"]


async def test_a_send_frame_with_an_extra_member_is_refused_and_names_its_txn(
    http: httpx.AsyncClient, app: FastAPI, alice: Client, bob: Client
) -> None:
    room = (await alice.rooms.direct("@bob")).room_id
    send = {"type": "send", "room_id": room, "txn_id": "x1", "content": megolm(bob), "priority": "high"}
    frames = await websocket_session(app, bob, [send], until=("sent", "error"))
    assert frames[-1]["type"] == "error" and frames[-1]["txn_id"] == "x1"
    error = frames[-1]["error"]
    assert error["code"] == "invalid_request" and "'priority' is not an accepted field" in error["message"]


async def test_a_websocket_sync_beyond_the_head_answers_from_the_head(
    http: httpx.AsyncClient, app: FastAPI, alice: Client
) -> None:
    """A position the server does not have (it was restored from a backup) is treated as the head, so the
    events that come next are not skipped, as on HTTP."""
    head = (await http.get("/v1/sync", headers=auth(alice))).json()["next_pos"]
    frames = await websocket_session(app, alice, [{"type": "sync", "since": head + 1000}], until="synced")
    assert frames[-1] == {"type": "synced", "pos": head}


# Numbers out of range in each frame: the sentence names the member and its bounds, as HTTP's does (found from
# outside: device_seq 2^53 was "must be a positive integer", since 2^53 and up_to 2^60 "non-negative integers").
OUT_OF_RANGE = [
    ("send", "device_seq", 2**53, "from 1 to 9007199254740991"),
    ("send", "device_seq", 0, "from 1 to 9007199254740991"),
    ("send", "device_seq", "7", "from 1 to 9007199254740991"),
    ("sync", "since", 2**53, "from 0 to 9007199254740991"),
    ("sync", "to_device_after", 2**60, "from 0 to 9007199254740991"),
    ("sync", "since", -1, "from 0 to 9007199254740991"),
    ("ack_to_device", "up_to", 2**60, "from 0 to 9007199254740991"),
    ("ack_to_device", "up_to", True, "from 0 to 9007199254740991"),
]


@pytest.mark.parametrize(("kind", "member", "value", "bounds"), OUT_OF_RANGE)
async def test_a_number_out_of_range_says_the_bounds(
    app: FastAPI, alice: Client, bob: Client, kind: str, member: str, value: object, bounds: str
) -> None:
    frame: dict[str, Any] = {"type": kind}
    if kind == "send":
        room = (await alice.rooms.direct("@bob")).room_id
        frame |= {"room_id": room, "txn_id": "n1", "content": megolm(bob)}
    frame[member] = value
    frames = await websocket_session(app, bob, [frame], until=("sent", "error", "synced"))
    error = frames[-1]["error"]
    assert error["code"] == "invalid_request", frames[-1]
    assert f"'{member}' must be an integer {bounds}" in error["message"], error
