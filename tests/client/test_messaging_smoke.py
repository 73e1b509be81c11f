from tokenim.client import Client


async def test_direct_chat_round_trip(alice: Client, bob: Client) -> None:
    room = await alice.direct_room("@bob")
    sent = await alice.send_text(room.room_id, "hello bob")
    got = await bob.sync()
    assert [(m.body, m.sender, m.verified) for m in got] == [("hello bob", alice.user_id, True)]
    assert got[0].id == sent.event_id
    again = await bob.history(room.room_id)
    assert [m.body for m in again] == ["hello bob"]
    await bob.send_text(room.room_id, "hi alice")
    msgs = await alice.sync()
    assert [m.body for m in msgs] == ["hello bob", "hi alice"]
