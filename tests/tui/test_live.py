"""`tokenim chat` live: messages arrive over the WebSocket, unread counts and mentions in the room list, the
bell and a desktop notification for a mention or a direct message, day separators, sender badges, text from
others shown literally (no Rich markup, no terminal controls), and the composer (multi-line, history)."""

from __future__ import annotations

from pathlib import Path

from tests.tui.conftest import SIZE, LiveUser, chat_app, screen_text, until, wait_screen
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.tui.widgets import Composer, RoomList

HOSTILE = "hi @alice: [red]x[/red] [link=https://evil.example]y[/link] [bold]\x1b[31mz\u202e"


async def received(client: Client, body: str) -> None:
    """Wait until `client` has received a message with `body` (syncing as it goes)."""
    seen: list[str] = []

    async def check() -> bool:
        seen.extend(m.body or "" for m in await client.messages.sync())
        return body in seen

    for _ in range(200):
        if await check():
            return
    raise AssertionError(f"{body!r} never arrived; saw {seen}")


async def test_messages_unread_mentions_bell_and_badges(live_user: LiveUser, clock: FakeClock, tmp_path: Path) -> None:
    alice, bob = await live_user("alice"), await live_user("bob")
    plans = await bob.rooms.create("plans", ["@alice"])
    await alice.rooms.join(plans.room_id)
    direct = await bob.rooms.direct("@alice")
    await bob.messages.send_text(direct.room_id, "are you there?")  # while alice was away
    record = tmp_path / "notified"
    fake = tmp_path / "notify-send"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {record}\n')
    fake.chmod(0o755)
    app = chat_app(alice, notify_command=str(fake))
    async with app.run_test(size=SIZE) as pilot:
        rooms = app.query_one(RoomList)
        await wait_screen(pilot, "are you there?")  # the direct chat sorts first and opens
        await until(lambda: app.synced_once, "the app to catch up")
        assert app.notifier.bells == 0  # it was open when it came in: no bell for what is on screen

        await bob.messages.send_text(plans.room_id, HOSTILE)
        await until(lambda: "@1" in str(rooms.children[-1].query_one("Static").render()), "the mention count")
        await until(lambda: record.exists(), "the desktop notification")
        assert app.notifier.bells == 1
        notified = record.read_text()
        assert "@bob · plans" in notified and "&lt;" not in notified and "[red]x[/red]" in notified and "\x1b" not in notified
        await bob.messages.send_text(plans.room_id, "and a second one")
        await wait_screen(pilot, "plans  2 @1")
        assert app.notifier.bells == 1  # no mention, not direct: counted, no bell

        await pilot.press("alt+down")  # the next room: plans
        shown = await wait_screen(pilot, "and a second one")
        assert "plans  2" not in shown  # opened: read
        # Shown as typed, markup and all; the escape character and the bidi override as visible escapes.
        assert "hi @alice: [red]x[/red] [link=https://evil.example]y[/link]" in shown
        assert "[bold]\\x1b[31mz\\u202e" in shown
        assert "@bob ?:" in shown  # bob is not verified by alice: the badge says so

        clock.advance(days=1)
        await bob.messages.send_text(plans.room_id, "a new day")
        shown = await wait_screen(pilot, "a new day")
        assert "──── Saturday 16 January 2027 ────" in shown and "──── Friday 15 January 2027 ────" in shown

        composer = app.query_one(Composer)
        composer.insert("line one")
        await pilot.press("ctrl+j")
        composer.insert("line two")
        await pilot.press("enter")
        await received(bob, "line one\nline two")
        shown = await wait_screen(pilot, "line two")
        assert "@alice: line one" in shown and "        line two" in shown  # the continuation line sits under the text
        assert composer.text == ""
        await pilot.press("up")
        assert composer.text == "line one\nline two"  # the composer's history
        await pilot.press("down")
        assert composer.text == ""

        await bob.messages.send_text(direct.room_id, "psst")  # a direct message while plans is open
        await until(lambda: app.notifier.bells == 2, "the bell for a direct message")
        assert app.model.rooms[direct.room_id].attention and app.model.rooms[direct.room_id].unread == 1
        await until(lambda: "psst" in record.read_text(), "the desktop notification of the direct message")
        assert "psst" not in screen_text(app)

        await pilot.press("f1")  # a dialog over the main screen: messages and the room list still come in
        await bob.messages.send_text(plans.room_id, "while you read the help")
        await bob.rooms.rename(plans.room_id, "plans two")
        await until(lambda: app.model.rooms[plans.room_id].summary.name == "plans two", "the rename, with the help open")
        await pilot.press("escape")
        shown = await wait_screen(pilot, "while you read the help")
        assert "# plans two" in shown and not any("unexpected" in said for said in app.said)
