"""What the person asks the app to do (`do_<command>(argument)`, from a key or a `/command`), each through
the SDK, one at a time (a lock: the SDK saves the profile once per operation). A refusal is shown as the
server or SDK says it, in a sentence."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text

from tokenim.client import Client, Message, SendResult
from tokenim.client.files import safe_file_name
from tokenim.core.display import clean
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.tui.model import RoomState
from tokenim.tui.screens import AskScreen, ConfirmScreen, InfoScreen, VerifyScreen
from tokenim.tui.text import BADGES, Trust, person, room_title

if TYPE_CHECKING:
    from tokenim.tui.app import ChatApp


def _refusal(message: str) -> TokenIMError:
    return TokenIMError(ErrorCode.INVALID_REQUEST, message)


def action(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """One action at a time; its refusal (or a file that can't be read) is shown, never a traceback."""

    @functools.wraps(fn)
    async def run(self: Actions, *args: Any) -> None:
        async with self.lock:
            try:
                await fn(self, *args)
            except TokenIMError as err:
                self.app.notify(err.message, severity="error", markup=False, timeout=8)
            except OSError as exc:
                where = f" {exc.filename}" if exc.filename else ""
                self.app.notify(f"Cannot use{where}: {(exc.strerror or 'refused').lower()}.", severity="error", markup=False)

    return run


def split_people(text: str) -> tuple[list[str], list[str]]:
    """Words that name people (`@bob`, `@bob,@carol`) and the other words."""
    people: list[str] = []
    words: list[str] = []
    for word in text.split():
        parts = [p for p in word.split(",") if p]
        if parts and all(p.startswith("@") for p in parts):
            people.extend(parts)
        else:
            words.append(word)
    return people, words


class Actions:
    """The app's commands, on its client."""

    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.lock = asyncio.Lock()

    @property
    def client(self) -> Client:
        assert self.app.client is not None
        return self.app.client

    def room(self, *, joined: bool = True) -> RoomState:
        state = self.app.current_room()
        if state is None:
            raise _refusal("Open a room first (the room list is on the left).")
        if joined and state.invited:
            raise _refusal("You are invited to this room: accept the invitation first (a), or decline it (x).")
        return state

    def say(self, text: str, severity: str = "information") -> None:
        self.app.notify(text, severity=severity, markup=False)  # type: ignore[arg-type]

    async def rooms_again(self, open_id: str | None = None) -> None:
        assert self.app.live is not None
        await self.app.live.refresh_rooms()
        if open_id is not None:
            await self.app.open_room(open_id)

    # ---- messages -------------------------------------------------------------------------------

    @action
    async def send_text(self, text: str) -> None:
        """Send what was typed; when it can't be sent, it goes back into the composer."""
        try:
            room = self.room()
            result = await self.client.messages.send_text(room.room_id, text)
        except TokenIMError:
            self.app.restore_draft(text)
            raise
        self.left_out(result)

    def left_out(self, result: SendResult) -> None:
        if result.excluded:
            lines = [f"{len(result.excluded)} member device(s) can't read this message:"]
            lines += [f"{e.user_id}: {e.message}" for e in result.excluded]
            self.say("\n".join(lines), "warning")

    @action
    async def do_file(self, argument: str) -> None:
        room = self.room()
        path = Path(argument).expanduser()
        if not path.is_file():
            raise _refusal(f"{clean(path)} is not a file.")
        bar = self.app.upload_bar()
        progress = bar.start(path.name, path.stat().st_size)
        try:
            result = await self.client.files.send(room.room_id, path, on_progress=progress)
        finally:
            bar.finish()
        self.say(f"Sent {clean(path.name)}.")
        self.left_out(result)

    async def do_save(self, argument: str) -> None:
        message = self.attachment()
        if message is None:
            self.say("Select a file message first (in the timeline: arrows, then s).", "error")
            return
        assert message.file is not None
        if argument:
            await self.save(message, argument)
            return
        default = str(self.app.downloads / safe_file_name(str(message.file.get("name", ""))))

        def answered(answer: str | None) -> None:
            if answer and answer.strip():
                self.app.run_worker(self.save(message, answer.strip()), group="actions", exit_on_error=False)

        self.app.push_screen(AskScreen("Save the file as", default), answered)

    def attachment(self) -> Message | None:
        """The selected message if it carries a file, else the room's latest file."""
        selected = self.app.selected_message()
        if selected is not None and selected.file is not None:
            return selected
        state = self.app.current_room()
        files = [m for m in state.timeline() if m.file is not None] if state else []
        return files[-1] if files else None

    @action
    async def save(self, message: Message, where: str) -> None:
        out = Path(where).expanduser()
        if out.is_dir():
            out = out / safe_file_name(str((message.file or {}).get("name", "")))
        info = await self.client.files.download(message.id, out.absolute())
        self.say(f"Saved {clean(info['name'])} to {clean(out)} (hash checked).")

    # ---- rooms ----------------------------------------------------------------------------------

    @action
    async def do_create(self, argument: str) -> None:
        people, words = split_people(argument)
        if not words:
            raise _refusal("Give the room a name, then the people to invite: /create plans @bob")
        created = await self.client.rooms.create(" ".join(words), people)
        await self.rooms_again(created.room_id)
        self.say(f"Created {clean(created.name)}.")

    @action
    async def do_dm(self, argument: str) -> None:
        people, words = split_people(argument)
        if len(people) != 1 or words:
            raise _refusal("Name one person for a direct chat: /dm @bob")
        room = await self.client.rooms.direct(people[0])
        await self.rooms_again(room.room_id)

    @action
    async def do_invite(self, argument: str) -> None:
        room = self.room()
        people, words = split_people(argument)
        if words or not people:
            raise _refusal("Name the people to invite with an @: /invite @bob @carol")
        done = []
        for user in people:
            await self.client.rooms.invite(room.room_id, user)
            done.append(self.client.full_user_id(user))
        await self.rooms_again()
        self.say(f"Invited {', '.join(clean(u) for u in done)}.")

    @action
    async def do_accept(self, _argument: str) -> None:
        room = self.room(joined=False)
        if not room.invited:
            raise _refusal("You are already in this room.")
        joined = await self.client.rooms.join(room.room_id)
        room.loaded = False
        await self.rooms_again()
        await self.app.open_room(joined.room_id)

    @action
    async def do_decline(self, _argument: str) -> None:
        room = self.room(joined=False)
        if not room.invited:
            raise _refusal("There is no invitation to decline here: to leave the room, press l.")
        await self.client.rooms.leave(room.room_id)
        await self.rooms_again()
        self.say(f"Declined the invitation to {room_title(room.summary, self.client.user_id)}.")

    async def do_leave(self, _argument: str) -> None:
        try:
            room = self.room(joined=False)
        except TokenIMError as err:
            self.say(err.message, "error")
            return
        title = room_title(room.summary, self.client.user_id)

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.run_worker(self.leave(room), group="actions", exit_on_error=False)

        self.app.push_screen(ConfirmScreen(f"Leave {title}? You will not see what is said there after leaving."), answered)

    @action
    async def leave(self, room: RoomState) -> None:
        await self.client.rooms.leave(room.room_id)
        await self.rooms_again()
        self.say(f"You left {room_title(room.summary, self.client.user_id)}.")

    @action
    async def do_rename(self, argument: str) -> None:
        room = self.room()
        if not argument.strip():
            raise _refusal("Give the new name: /rename new name")
        await self.client.rooms.rename(room.room_id, argument.strip())
        await self.rooms_again()
        self.say(f"Renamed to {clean(argument.strip())}.")

    @action
    async def do_members(self, _argument: str) -> None:
        room = self.room(joined=False)
        members = (await self.client.rooms.members(room.room_id)).members
        me = self.client.user_id
        text = Text(f"Members of {room_title(room.summary, me)}\n\n", style="bold")
        for m in sorted(members, key=lambda m: (m.membership != "join", m.user_id)):
            text.append(f"  {person(m.user_id, me):24}", style="bold")
            text.append(f" {m.membership:7} {m.role:7} ")
            if m.user_id == me:
                text.append("you\n", style="dim")
                continue
            status = self.client.verification.status(m.user_id)
            trust = Trust.VERIFIED if status.verified else Trust.CHANGED if status.verify_again else Trust.UNVERIFIED
            badge = BADGES[trust]
            text.append(f"{badge.mark} ", style=badge.style)
            text.append(f"{clean(status.why_not) if status.why_not else 'verified'}\n", style="dim")
        self.app.push_screen(InfoScreen(text))

    async def do_verify(self, argument: str) -> None:
        me = self.client.user_id
        people, _words = split_people(argument)
        if not people:
            state = self.app.current_room()
            others = [m for m in state.summary.members if m != me] if state and state.summary.kind == "direct" else []
            if len(others) != 1:

                def answered(answer: str | None) -> None:
                    if answer and answer.strip():
                        self.app.run_worker(self.do_verify(answer.strip()), group="actions", exit_on_error=False)

                self.app.push_screen(AskScreen("Verify whom? (@bob)"), answered)
                return
            people = others
        user_id = self.client.full_user_id(people[0])

        async def verify(confirm: Any, waiting: Any) -> Any:
            try:
                return await self.client.verification.sas(user_id, confirm, on_waiting=waiting)
            finally:
                self.app.forget_verification()

        self.app.push_screen(VerifyScreen(user_id, verify))


__all__ = ["Actions", "split_people"]
