from tokenim.client import Client


async def test_direct_chat_round_trip(alice: Client, bob: Client) -> None:
    room = await alice.rooms.direct("@bob")
    sent = await alice.messages.send_text(room.room_id, "hello bob")
    got = await bob.messages.sync()
    assert [(m.body, m.sender, m.verified) for m in got] == [("hello bob", alice.user_id, True)]
    assert got[0].id == sent.event_id
    again = await bob.messages.history(room.room_id)
    assert [m.body for m in again] == ["hello bob"]
    await bob.messages.send_text(room.room_id, "hi alice")
    msgs = await alice.messages.sync()
    assert [m.body for m in msgs] == ["hello bob", "hi alice"]
