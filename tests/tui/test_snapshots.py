"""Snapshots of the app's main screens, as text (what a person reads), in tests/tui/snapshots/. A change to a
screen fails here until the snapshot is looked at and rewritten: TOKENIM_UPDATE_SNAPSHOTS=1 rewrites them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from textual.pilot import Pilot

from tests.tui.conftest import SIZE, LiveUser, chat_app, screen_text, until, wait_screen
from tokenim.core.clock import FakeClock
from tokenim.tui import ChatApp
from tokenim.tui.screens import HelpScreen, InfoScreen, VerifyScreen
from tokenim.tui.widgets import Composer

SNAPSHOTS = Path(__file__).parent / "snapshots"


async def matches(pilot: Pilot[None], name: str) -> None:
    """The screen, without passing notifications, equals the stored snapshot (device ids masked)."""
    app = pilot.app
    assert isinstance(app, ChatApp)
    app.clear_notifications()
    await pilot.pause()
    text = re.sub(r"device [A-Z0-9]{10}", "device XXXXXXXXXX", screen_text(app))
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("TOKENIM_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"the screen differs from {path}:\n{text}"


async def test_the_main_screens(live_user: LiveUser, clock: FakeClock) -> None:
    alice, bob = await live_user("alice"), await live_user("bob")
    direct = await bob.rooms.direct("@alice")
    await bob.messages.send_text(direct.room_id, "lunch at noon?")
    clock.advance(days=1, seconds=3723)
    await bob.messages.send_text(direct.room_id, "agenda:\n- budget\n- hiring")
    await bob.rooms.create("plans", ["@alice"])
    app = chat_app(alice)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, "- hiring")
        await until(lambda: app.synced_once, "the app to connect")
        app.query_one(Composer).insert("see you @bob")
        await matches(pilot, "main")

        await pilot.press("f1")
        await until(lambda: isinstance(app.screen, HelpScreen), "the help")
        await matches(pilot, "help")
        await pilot.press("escape")

        await pilot.press("alt+up")
        await wait_screen(pilot, "You are invited to plans")
        await matches(pilot, "invitation")

        await pilot.press("alt+down", "escape", "m")
        await until(lambda: isinstance(app.screen, InfoScreen), "the member list")
        await matches(pilot, "members")
        await pilot.press("escape", "v")
        await until(lambda: isinstance(app.screen, VerifyScreen), "the verification screen")
        await wait_screen(pilot, "Waiting for @bob:tokenim.test")
        await matches(pilot, "verify")
