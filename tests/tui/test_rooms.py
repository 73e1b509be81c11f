"""`tokenim chat` rooms: invitations accepted and declined, and every room action from a key or a /command
(create, direct chat, invite, rename, members, leave), each checked on the server through the other user."""

from __future__ import annotations

from tests.tui.conftest import SIZE, LiveUser, chat_app, told, until, wait_screen
from tokenim.client import Client
from tokenim.tui.screens import AskScreen, ConfirmScreen, InfoScreen
from tokenim.tui.widgets import Composer, RoomItem


async def membership(client: Client, name: str) -> str | None:
    rooms = [r for r in (await client.rooms.all()).rooms if r.name == name]
    return rooms[0].membership if rooms else None


async def test_invitations_are_accepted_and_declined(live_user: LiveUser) -> None:
    alice, bob = await live_user("alice"), await live_user("bob")
    plans = await bob.rooms.create("plans", ["@alice"])
    app = chat_app(alice)
    async with app.run_test(size=SIZE) as pilot:
        shown = await wait_screen(pilot, "You are invited to plans (members: @bob). a: accept · x: decline")
        assert "✉ plans  invited" in shown
        app.query_one(Composer).insert("too early")
        await pilot.press("enter")
        await told(app, "accept the invitation first")
        await pilot.press("escape", "a")  # out of the composer, then accept
        await until(lambda: not app.model.rooms[plans.room_id].invited, "the invitation to be accepted")
        await bob.messages.send_text(plans.room_id, "welcome aboard")
        await wait_screen(pilot, "welcome aboard")
        assert await membership(bob, "plans") == "join" and await membership(alice, "plans") == "join"

        other = await bob.rooms.create("other", ["@alice"])
        await wait_screen(pilot, "✉ other  invited")
        item = next(i for i in app.query(RoomItem) if i.room_id == other.room_id)
        await pilot.click(item)  # the mouse opens a room too
        await wait_screen(pilot, "You are invited to other")
        await pilot.click("#timeline")
        await pilot.press("x")
        await until(lambda: other.room_id not in app.model.rooms, "the declined room to go")
        assert await membership(alice, "other") is None


async def test_room_actions_from_keys_and_commands(live_user: LiveUser) -> None:
    alice, bob = await live_user("alice"), await live_user("bob")
    app = chat_app(alice)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, "No room yet")
        composer = app.query_one(Composer)
        composer.insert("/create team @bob")
        await pilot.press("enter")
        await wait_screen(pilot, "# team  · 1 member")  # members who joined
        assert await membership(bob, "team") == "invite"

        composer.insert("/rename crew")
        await pilot.press("enter")
        await wait_screen(pilot, "# crew  · 1 member")
        assert await membership(bob, "crew") == "invite"

        await pilot.press("escape", "n")  # a key asks first
        assert isinstance(app.screen, AskScreen)
        await pilot.press(*"side", "enter")
        await wait_screen(pilot, "# side  · 1 member")
        await pilot.press("escape", "i")
        await pilot.press("at", *"bob", "enter")
        await told(app, "Invited @bob:tokenim.test.")
        assert await membership(bob, "side") == "invite"

        composer.focus()
        composer.insert("/dm @bob")
        await pilot.press("enter")
        await wait_screen(pilot, "direct chat with @bob")

        await pilot.press("escape", "m")
        await until(lambda: isinstance(app.screen, InfoScreen), "the member list")
        shown = await wait_screen(pilot, "Members of @bob")
        assert "you" in shown and "? you have not verified @bob:tokenim.test" in shown
        await pilot.press("escape")

        await pilot.press("alt+down")  # crew
        await wait_screen(pilot, "# crew")
        await pilot.press("escape", "l")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(lambda: all(r.summary.name != "crew" for r in app.model.rooms.values()), "crew to be left")
        assert await membership(alice, "crew") is None

        composer.focus()
        composer.insert("/nonsense")
        await pilot.press("enter")
        await told(app, "There is no command /nonsense")
        assert composer.text == "/nonsense"  # kept, to be corrected
