"""`tokenim chat`: a file sent with a progress bar and saved from the timeline; verifying someone by emoji
in the app (the other side through the SDK), after which their badge says verified."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.tui.conftest import SIZE, LiveUser, chat_app, told, until, wait_screen
from tokenim.client import SasShown
from tokenim.tui.screens import AskScreen, VerifyScreen
from tokenim.tui.widgets import Composer, Timeline, UploadBar


async def test_a_file_is_sent_with_progress_and_saved(live_user: LiveUser, tmp_path: Path) -> None:
    alice, bob = await live_user("alice"), await live_user("bob")
    direct = await alice.rooms.direct("@bob")
    big = tmp_path / "report.bin"
    big.write_bytes(os.urandom(3 * (1 << 20) + 5))  # a few chunks: the bar moves more than once
    progress: list[tuple[int, int]] = []
    app = chat_app(alice, downloads=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.synced_once, "the app to connect")
        bar = app.query_one(UploadBar)
        start = bar.start

        def watched(name: str, total: int):  # type: ignore[no-untyped-def]
            tell = start(name, total)

            def both(done: int, size: int) -> None:
                progress.append((done, size))
                tell(done, size)

            return both

        bar.start = watched  # type: ignore[method-assign]
        app.query_one(Composer).insert(f"/file {big}")
        await pilot.press("enter")
        await told(app, "Sent report.bin.")
        assert len(progress) >= 3 and progress[-1] == (big.stat().st_size, big.stat().st_size)
        assert not bar.display  # gone once sent
        await wait_screen(pilot, "📎 report.bin (3.1 MB)")
        got = [m for m in await bob.messages.sync() if m.file is not None]
        await bob.files.download(got[-1].id, tmp_path / "bob-got.bin")
        assert (tmp_path / "bob-got.bin").read_bytes() == big.read_bytes()

        sent = tmp_path / "notes.txt"
        sent.write_text("agenda: budget\n")
        await bob.files.send(direct.room_id, sent)
        await wait_screen(pilot, "📎 notes.txt (15 bytes)")
        (tmp_path / "notes.txt").unlink()  # the default place to save it must be free
        await pilot.press("escape")  # the timeline, its cursor on the newest message
        assert app.query_one(Timeline).selected() is not None
        await pilot.press("s")
        await until(lambda: isinstance(app.screen, AskScreen), "the save dialog")
        await pilot.press("enter")  # the proposed place: its own name in the downloads folder
        await told(app, "Saved notes.txt to")
        assert (tmp_path / "notes.txt").read_text() == "agenda: budget\n"
        await pilot.press("s", "enter")  # again: the file is there now, and is never replaced
        await told(app, "already exists")


async def test_emoji_verification_marks_the_sender_verified(live_user: LiveUser) -> None:
    alice, bob = await live_user("alice"), await live_user("bob")
    direct = await bob.rooms.direct("@alice")
    await bob.messages.send_text(direct.room_id, "before")
    bob_saw: list[SasShown] = []

    async def bob_confirms(shown: SasShown) -> bool:
        bob_saw.append(shown)
        return True

    app = chat_app(alice)
    async with app.run_test(size=SIZE) as pilot:
        await wait_screen(pilot, "@bob ?: before")
        await pilot.press("escape", "v")  # in a direct chat: the other person
        assert isinstance(app.screen, VerifyScreen)
        bob_side = asyncio.create_task(bob.verification.sas("@alice", bob_confirms, poll_interval=0.05))
        await until(lambda: bob_saw and app.screen.query(".emoji"), "the emoji on both sides")
        shown = await wait_screen(pilot, "Do these emoji match")
        for emoji in bob_saw[0].emoji:
            assert emoji["name"] in shown  # the same seven, named, as on bob's screen
        await pilot.press("y")
        await asyncio.wait_for(bob_side, 30)
        await wait_screen(pilot, "@bob:tokenim.test is verified")
        await pilot.press("escape")
        await bob.messages.send_text(direct.room_id, "after")
        shown = await wait_screen(pilot, "@bob ✔: after")
        assert alice.verification.status("@bob").verified
