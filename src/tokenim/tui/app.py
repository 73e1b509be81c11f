"""`tokenim chat`: one window with the rooms, the open room's messages and a composer, live over the
WebSocket. The profile is opened once (by the CLI, or in the page for `--serve`); everything is end-to-end
encrypted by the SDK (`tokenim.client`), which this app only drives. Keyboard first (`?` lists every key
and `/command`), and the mouse works on rooms, messages and buttons."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import tzinfo
from pathlib import Path
from typing import TypeVar

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.widget import Widget
from textual.widgets import Footer, ListView, Static
from textual.worker import Worker, WorkerState

from tokenim.client import Client, Message
from tokenim.client.attention import Attention, awaiting_key, mentions
from tokenim.core.errors import TokenIMError
from tokenim.protocol.api import RoomSummary
from tokenim.tui.actions import Actions
from tokenim.tui.commands import BY_NAME, COMMANDS, read_line
from tokenim.tui.live import ROOM_POLL_S, Live
from tokenim.tui.model import ChatModel, RoomState
from tokenim.tui.notify import Notifier, NotifyMode
from tokenim.tui.screens import AskScreen, HelpScreen, PassphraseScreen
from tokenim.tui.text import Shown, person, plain, room_title, trust_of
from tokenim.tui.widgets import Banner, Composer, RoomList, Timeline, UploadBar

W = TypeVar("W", bound=Widget)
HISTORY_LIMIT = 100
SHOWN_IN_FOOTER = {"n", "d", "i", "f", "s", "v"}
Opener = Callable[[str], Awaitable[Client]]

CSS = """
#top { height: 1; background: $primary; color: $text; padding: 0 1; }
#offline { background: $error; color: $text; height: auto; padding: 0 1; }
#keys { background: $warning-darken-2; color: $text; height: auto; padding: 0 1; }
#main { height: 1fr; }
#rooms { width: 32; border: round $primary; }
#rooms:focus { border: round $accent; }
#right { width: 1fr; }
#room-title { height: 1; padding: 0 1; text-style: bold; }
#timeline { height: 1fr; border: round $primary; }
#timeline:focus { border: round $accent; }
#composer { height: 5; border: round $primary; }
#composer:focus { border: round $accent; }
UploadBar { height: 2; display: none; padding: 0 1; }
ModalScreen { align: center middle; }
.dialog { width: 72; height: auto; max-height: 90%; border: thick $primary; background: $surface; padding: 1 2; }
.wide { width: 96; }
.buttons { height: auto; margin-top: 1; }
.buttons Button { margin-right: 2; }
#emoji { grid-size: 7; height: auto; grid-gutter: 1; margin: 1 0; }
.emoji { height: 3; }
#problem { color: $error; height: auto; }
"""


class ChatApp(App[None]):
    """The terminal app for one device. Give it an open `client`, or an `opener` that unlocks the profile
    with a passphrase asked on screen (browser mode)."""

    TITLE = "TokenIM"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("f1", "command('help')", "Help", priority=True),
        Binding("question_mark", "command('help')", "Help"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("alt+up,ctrl+pageup", "step_room(-1)", "Previous room", show=False, priority=True),
        Binding("alt+down,ctrl+pagedown", "step_room(1)", "Next room", show=False, priority=True),
        Binding("escape", "leave_composer", "Keys", show=False),
        *[
            Binding(c.key, f"command('{c.name}')", c.name.capitalize(), show=c.key in SHOWN_IN_FOOTER)
            for c in COMMANDS
            if len(c.key) == 1 and c.key != "?"
        ],
    ]

    def __init__(
        self,
        client: Client | None = None,
        *,
        opener: Opener | None = None,
        profile: str = "",
        notify: NotifyMode = NotifyMode.DESKTOP,
        notify_command: str | None = None,
        tz: tzinfo | None = None,
        room_poll_s: float = ROOM_POLL_S,
        notice: str | None = None,
        downloads: Path | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.opener = opener
        self.profile = profile
        self.tz = tz
        self.room_poll_s = room_poll_s
        self.notice = notice  # a line to show once open (the key rotation reminder)
        self.downloads = downloads or Path.cwd()
        self.notifier = Notifier(self.bell, notify, notify_command)
        self.model = ChatModel(client.user_id if client else "")
        self.actions = Actions(self)
        self.live: Live | None = None
        self.synced_once = False
        self.offline_since: str | None = None
        self.has_focus = True
        self.missed: list[str] = []  # mentions and direct messages that came while catching up at start
        self._verify_again: dict[str, bool] = {}
        self.crash: BaseException | None = None
        self.said: deque[str] = deque(maxlen=50)  # the last things told in a notification (tests read them)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A notification (a toast); never Rich markup, since most of them quote someone else's words."""
        self.said.append(message)
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def _handle_exception(self, error: Exception) -> None:
        """Something unexpected: exit without Textual's traceback, which prints local variables (this app's
        hold decrypted messages and keys). The CLI says it in one sentence (TOKENIM_DEBUG=1 for details)."""
        self._return_code = 1
        if self._exception is None:  # as Textual does: the pilot re-raises it in tests
            self._exception = error
            self._exception_event.set()
        self.crash = error
        self._close_messages_no_wait()

    def raise_crash(self) -> None:
        """After the app ended: raise what ended it unexpectedly, if anything did."""
        if self.crash is not None:
            raise self.crash

    # ---- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("TokenIM", id="top", markup=False)
        yield Banner("offline")
        yield Banner("keys")
        with Horizontal(id="main"):
            yield RoomList()
            with Vertical(id="right"):
                yield Static("", id="room-title", markup=False)
                yield Timeline(self.tz)
                yield UploadBar()
                yield Composer()
        yield Footer()

    async def on_mount(self) -> None:
        if self.client is not None:
            await self.start()
        elif self.opener is not None:
            self.push_screen(PassphraseScreen(self.profile, self._unlock))

    async def _unlock(self, passphrase: str) -> str | None:
        assert self.opener is not None
        try:
            self.client = await self.opener(passphrase)
        except TokenIMError as err:
            return err.message
        self.model = ChatModel(self.client.user_id)
        self.call_later(self.start)
        return None

    async def start(self) -> None:
        """The profile is open: show who this is, then connect."""
        assert self.client is not None
        me = self.client.user_id
        self.main("#top", Static).update(plain(f"TokenIM · {me} · device {self.client.device_id}"))
        self.main("#offline", Banner).say("Connecting to the server…", "bold")
        self.main(Composer).focus()
        if self.notice:
            self.notify(self.notice, severity="warning", markup=False, timeout=15)
        self.live = Live(self.client, self, room_poll_s=self.room_poll_s)
        self.run_worker(self._connect(), group="live", exit_on_error=False)

    async def _connect(self) -> None:
        assert self.live is not None
        try:
            await self.live.refresh_rooms()
        except TokenIMError as err:
            self.offline(err.message.rstrip("."), 0)
        self.run_worker(self.live.listen(), group="live", exit_on_error=False)
        self.run_worker(self.live.poll_rooms(), group="live", exit_on_error=False)
        self.run_worker(self.live.refill(), group="live", exit_on_error=False)

    # ---- what the connection brings (tui/live.py LiveView) ----------------------------------------

    def offline(self, reason: str, delay: float) -> None:
        self.offline_since = reason
        self.main("#offline", Banner).say(f"Offline: {reason}. Reconnecting in {max(1, round(delay))} s…", "bold")

    def online(self) -> None:
        was_offline = self.offline_since is not None
        self.offline_since = None
        self.main("#offline", Banner).say(None)
        if was_offline:
            self.notify("Reconnected.", markup=False, timeout=3)
        if not self.synced_once:
            self.synced_once = True
            if self.missed:
                self.notifier.alert(f"{len(self.missed)} new", "mentions or direct messages: " + ", ".join(self.missed))
        if self.model.current is not None:
            self.run_worker(self.load_history(self.model.current), group="history", exit_on_error=False)

    def ended(self, error: TokenIMError) -> None:
        self.main("#offline", Banner).say(f"Disconnected: {error.message}", "bold")

    def knows(self, room_id: str) -> bool:
        return room_id in self.model.rooms

    def awaiting(self) -> dict[str, set[str]]:
        return self.model.awaiting()

    async def arrived(self, message: Message, attention: Attention) -> None:
        seen = message.room == self.model.current and self.has_focus
        state = self.model.add(message, attention, seen=seen)
        if state is None:
            return
        if message.room == self.model.current:
            await self.main(Timeline).add(self.shown(message))
        if message.event == "key_rotated":
            self._verify_again.pop(message.sender, None)
        if attention.wanted and not seen:
            self._alert(message, state, attention)
        await self.draw_rooms()
        self.draw_keys_banner()

    def _alert(self, message: Message, state: RoomState, attention: Attention) -> None:
        sender = person(message.sender, self.model.me)
        where = "direct message" if attention.direct and not attention.mention else room_title(state.summary, self.model.me)
        if not self.synced_once:
            self.missed.append(f"{sender} ({where})")
            return
        if message.file is not None:
            body = f"sent a file: {message.file.get('name', '')}"
        elif awaiting_key(message):
            body = "a message (waiting for its key)"
        else:
            body = message.body or ""
        self.notifier.alert(f"{sender} · {where}", body)

    async def rooms_changed(self, rooms: list[RoomSummary]) -> None:
        changed = self.model.set_rooms(rooms)
        await self.draw_rooms()
        if self.model.current is None and (changed or not self.synced_once):
            await self.draw_timeline()  # the room shown is gone (left, declined), or there is none yet
        if self.model.current is None and self.model.rooms:
            joined = [r for r in self.model.ordered() if not r.invited]
            await self.open_room((joined or self.model.ordered())[0].room_id)
        elif self.model.current is not None:
            self.draw_title()

    async def refilled(self, room_id: str, messages: list[Message]) -> None:
        state = self.model.rooms.get(room_id)
        if state is None:
            return
        timeline = self.main(Timeline)
        for m in messages:
            state.messages[m.id] = m
            if room_id == self.model.current:
                timeline.update(self.shown(m))
        self.draw_keys_banner()

    # ---- drawing ----------------------------------------------------------------------------------

    def verify_again(self, user_id: str) -> bool:
        if user_id not in self._verify_again and self.client is not None:
            self._verify_again[user_id] = self.client.verification.status(user_id).verify_again
        return self._verify_again.get(user_id, False)

    def forget_verification(self) -> None:
        self._verify_again.clear()

    def shown(self, m: Message) -> Shown:
        state = self.model.rooms.get(m.room)
        mention = state is not None and m.id in state.mentioned
        trust = trust_of(m, self.model.me, self.verify_again(m.sender) if m.sender != self.model.me else False)
        return Shown(m, self.model.me, trust, mention=mention, awaiting_key=awaiting_key(m))

    async def draw_rooms(self) -> None:
        me = self.model.me
        rooms = [(r, RoomList.label(r, room_title(r.summary, me))) for r in self.model.ordered()]
        await self.main(RoomList).show_rooms(rooms, self.model.current)

    def draw_title(self) -> None:
        state = self.current_room()
        text = Text()
        if state is not None:
            s = state.summary
            kind = "direct chat with " if s.kind == "direct" else "# "
            text.append(kind, style="dim")
            text.append(room_title(s, self.model.me))
            text.append(f"  · {len(s.members)} member{'s' if len(s.members) != 1 else ''}", style="dim")
        self.main("#room-title", Static).update(text)

    def draw_keys_banner(self) -> None:
        waiting = sum(len(ids) for ids in self.model.awaiting().values())
        self.main("#keys", Banner).say(
            f"{waiting} message{'s' if waiting != 1 else ''} wait for their keys; they fill in when the keys arrive."
            if waiting
            else None
        )

    async def draw_timeline(self) -> None:
        state = self.current_room()
        timeline = self.main(Timeline)
        if state is None:
            await timeline.show_room([], plain("No room yet: n creates one, d starts a direct chat.", "italic"))
            return
        if state.invited:
            who = ", ".join(person(m, self.model.me) for m in state.summary.members if m != self.model.me)
            notice = plain(
                f"You are invited to {room_title(state.summary, self.model.me)} (members: {who or 'none yet'}). "
                "a: accept · x: decline",
                "bold",
            )
            await timeline.show_room([], notice)
            return
        shown = [self.shown(m) for m in state.timeline()]
        await timeline.show_room(shown, None if shown or not state.loaded else plain("No messages yet.", "italic"))

    def current_room(self) -> RoomState | None:
        return self.model.rooms.get(self.model.current) if self.model.current else None

    async def open_room(self, room_id: str) -> None:
        state = self.model.open(room_id)
        if state is None:
            return
        self.draw_title()
        await self.draw_rooms()
        await self.draw_timeline()
        if not state.loaded and not state.invited and self.synced_once:
            self.run_worker(self.load_history(room_id), group="history", exit_on_error=False)

    async def load_history(self, room_id: str) -> None:
        assert self.client is not None
        try:
            messages = await self.client.messages.history(room_id, HISTORY_LIMIT)
        except TokenIMError as err:
            self.notify(err.message, severity="error", markup=False)
            return
        me = self.client.user_id
        mentioned = {m.id for m in messages if m.sender != me and mentions(m.body, me)}
        if self.model.merge_history(room_id, messages, mentioned) is not None and room_id == self.model.current:
            await self.draw_timeline()
        self.draw_keys_banner()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A task that failed unexpectedly is said in a sentence (never a traceback); a live one in the banner,
        since messages no longer arrive. TOKENIM_DEBUG=1 logs the details to Textual's log."""
        if event.state is not WorkerState.ERROR or not self.is_running:
            return  # while the app closes, a task still running finds its widgets gone: nothing to say
        if os.environ.get("TOKENIM_DEBUG"):
            self.log.error(repr(event.worker.error))
        if event.worker.group == "live":
            self.main("#offline", Banner).say("The live connection stopped unexpectedly: restart tokenim chat.")
        else:
            self.notify("Something unexpected went wrong; nothing more was done.", severity="error")

    # ---- the person -------------------------------------------------------------------------------

    def on_app_focus(self, _event: events.AppFocus) -> None:
        self.has_focus = True
        if self.model.current is not None:
            self.model.open(self.model.current)
            self.run_worker(self.draw_rooms(), group="draw")

    def on_app_blur(self, _event: events.AppBlur) -> None:
        self.has_focus = False

    async def on_list_view_selected(self, event: ListView.Selected) -> None:
        if isinstance(event.list_view, RoomList):
            room_id = getattr(event.item, "room_id", None)
            if room_id is not None and room_id != self.model.current:
                await self.open_room(room_id)
            self.main(Composer).focus()
        elif isinstance(event.list_view, Timeline):
            selected = self.main(Timeline).selected()
            if selected is not None and selected.file is not None:
                await self.action_command("save")

    async def on_composer_submitted(self, event: Composer.Submitted) -> None:
        typed = read_line(event.text)
        composer = self.main(Composer)
        if typed.unknown:
            self.notify(f"There is no command /{typed.unknown}: ? lists them (// sends a /).", severity="error", markup=False)
            return
        composer.load_text("")
        if typed.command is not None:
            await self.run_action_of(typed.command.action, typed.argument)
            return
        self.run_worker(self.actions.send_text(typed.text), group="actions", exit_on_error=False)

    async def action_command(self, name: str) -> None:
        """A key for a command: ask what it needs first (Escape cancels), then do it."""
        command = BY_NAME[name]
        if not command.ask:
            await self.run_action_of(command.action, "")
            return

        def answered(answer: str | None) -> None:
            if answer is not None and answer.strip():
                self.run_worker(self.run_action_of(command.action, answer.strip()), group="actions", exit_on_error=False)

        self.push_screen(AskScreen(command.ask), answered)

    async def run_action_of(self, action: str, argument: str) -> None:
        if action == "help":
            self.push_screen(HelpScreen())
        elif action == "quit":
            self.exit()
        else:
            self.run_worker(getattr(self.actions, f"do_{action}")(argument), group="actions", exit_on_error=False)

    async def action_step_room(self, step: int) -> None:
        ordered = [r.room_id for r in self.model.ordered()]
        if not ordered:
            return
        at = ordered.index(self.model.current) if self.model.current in ordered else -1
        await self.open_room(ordered[(at + step) % len(ordered)])

    def main(self, selector: type[W] | str, kind: type[W] | None = None) -> W:
        """A widget of the main screen, whatever dialog is open over it (`query_one` would search the dialog)."""
        screen = self.screen_stack[0] if self.screen_stack else self.screen
        if kind is not None:
            return screen.query_one(selector, kind)  # type: ignore[arg-type]
        return screen.query_one(selector)  # type: ignore[return-value]

    def restore_draft(self, text: str) -> None:
        """A message that could not be sent goes back into the composer (unless something new was typed)."""
        composer = self.main(Composer)
        if not composer.text.strip():
            composer.load_text(text)

    def upload_bar(self) -> UploadBar:
        return self.main(UploadBar)

    def selected_message(self) -> Message | None:
        return self.main(Timeline).selected()

    def action_leave_composer(self) -> None:
        if isinstance(self.focused, Composer):
            self.main(Timeline).focus()


__all__ = ["ChatApp"]
