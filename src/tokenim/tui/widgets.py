"""The app's widgets: the room list, the timeline, the composer and the banners. They draw what the model
(tui/model.py) holds, through tui/text.py; none of them talks to the server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message as TextualMessage
from textual.widgets import ListItem, ListView, ProgressBar, Static, TextArea

from tokenim.client import Message
from tokenim.tui.model import RoomState
from tokenim.tui.text import Shown, day_label, day_of, message_text, plain, room_label


class RoomItem(ListItem):
    """A room in the list."""

    def __init__(self, room_id: str, label: Text) -> None:
        super().__init__(Static(label, markup=False))
        self.room_id = room_id

    def show(self, label: Text) -> None:
        self.query_one(Static).update(label)


class RoomList(ListView):
    """Invitations, then rooms; each with its unread count and mentions."""

    BINDINGS = [Binding("enter", "select_cursor", "Open", show=False)]

    def __init__(self) -> None:
        super().__init__(id="rooms")
        self.border_title = "Rooms"
        self._order: list[str] = []

    async def show_rooms(self, rooms: list[tuple[RoomState, Text]], current: str | None) -> None:
        """Redraw the list: rebuilt when rooms came or went, else each label updated in place."""
        order = [r.room_id for r, _ in rooms]
        if order != self._order:
            self._order = order
            await self.clear()
            await self.extend(RoomItem(r.room_id, label) for r, label in rooms)
        else:
            for item, (_, label) in zip(self.query(RoomItem), rooms, strict=False):
                item.show(label)
        if current in order:
            self.index = order.index(current)

    @staticmethod
    def label(room: RoomState, title: str) -> Text:
        return room_label(title, room.summary, room.unread, room.mentions, room.attention)


class DayItem(ListItem):
    """A day separator: never selected."""

    def __init__(self, text: str) -> None:
        super().__init__(Static(Text(f"──── {text} ────", style="dim"), markup=False), disabled=True)


class MessageItem(ListItem):
    """One message; its text is drawn again when the message changes (its key arrived)."""

    def __init__(self, message: Message, text: Text) -> None:
        super().__init__(Static(text, markup=False))
        self.message = message

    def show(self, message: Message, text: Text) -> None:
        self.message = message
        self.query_one(Static).update(text)


class Timeline(ListView):
    """The open room's messages, with a separator where the day changes; the cursor selects a message
    (to save its attachment)."""

    def __init__(self, tz: tzinfo | None) -> None:
        super().__init__(id="timeline")
        self.tz = tz
        self._items: dict[str, MessageItem] = {}
        self._last_day: str | None = None
        self._notice: ListItem | None = None

    async def show_room(self, messages: list[Shown], notice: Text | None = None) -> None:
        """Draw a room from scratch (`notice` instead of messages: an invitation, an empty room)."""
        await self.clear()
        self._items.clear()
        self._last_day = None
        items: list[ListItem] = []
        self._notice = None
        if notice is not None:
            self._notice = ListItem(Static(notice, markup=False), disabled=True)
            items.append(self._notice)
        for shown in messages:
            items.extend(self._items_for(shown))
        await self.extend(items)
        self.to_end()

    def _items_for(self, shown: Shown) -> list[ListItem]:
        out: list[ListItem] = []
        day = day_of(shown.message.ts, self.tz)
        if day != self._last_day:
            self._last_day = day
            out.append(DayItem(day_label(shown.message.ts, self.tz)))
        item = MessageItem(shown.message, message_text(shown, self.tz))
        self._items[shown.message.id] = item
        out.append(item)
        return out

    async def add(self, shown: Shown) -> None:
        """A new message at the end (or drawn again where it is, if shown already)."""
        if shown.message.id in self._items:
            self.update(shown)
            return
        if self._notice is not None:  # "No messages yet." goes with the first message
            await self._notice.remove()
            self._notice = None
        at_end = self.index is None or self.index >= len(self) - 1
        await self.extend(self._items_for(shown))
        if at_end:
            self.to_end()

    def update(self, shown: Shown) -> None:
        item = self._items.get(shown.message.id)
        if item is not None:
            item.show(shown.message, message_text(shown, self.tz))

    def to_end(self) -> None:
        if len(self):
            self.index = len(self) - 1
        self.scroll_end(animate=False)

    def selected(self) -> Message | None:
        item = self.highlighted_child
        return item.message if isinstance(item, MessageItem) else None

    def messages(self) -> list[Message]:
        return [item.message for item in self._items.values()]


class Composer(TextArea):
    """Where messages are written: Enter sends, Ctrl+J (or Alt+Enter, Shift+Enter) starts a new line; Up on the
    first line and Down on the last go through what was sent before."""

    NEWLINE_KEYS = frozenset({"ctrl+j", "alt+enter", "shift+enter"})
    BINDINGS = [
        Binding("ctrl+p", "history(-1)", "Previous", show=False),
        Binding("ctrl+n", "history(1)", "Next", show=False),
    ]

    class Submitted(TextualMessage):
        """The person pressed Enter."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self) -> None:
        super().__init__(id="composer", soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        self.border_title = "Message (Enter: send · Ctrl+J: new line · /help)"
        self.sent: list[str] = []
        self._at: int | None = None  # where in `sent` the Up/Down walk is; None: a fresh text

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip():
                self.remember(text)
                self.post_message(self.Submitted(text))
            return
        if event.key in self.NEWLINE_KEYS:  # here, not as a binding: bindings run after keys typed just after
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        await super()._on_key(event)

    def remember(self, text: str) -> None:
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._at = None

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end)

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and self.cursor_location[0] == 0 and self.sent:
            self.action_history(-1)
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        if not select and self.cursor_location[0] == self.document.line_count - 1 and self._at is not None:
            self.action_history(1)
            return
        super().action_cursor_down(select)

    def action_history(self, step: int) -> None:
        """Bring back an earlier message (step -1) or a later one (+1); past the newest, an empty composer."""
        if not self.sent:
            return
        at = (len(self.sent) if self._at is None else self._at) + step
        if at >= len(self.sent):
            self._at = None
            self.load_text("")
            return
        self._at = max(0, at)
        self.load_text(self.sent[self._at])
        self.move_cursor(self.document.end)


class Banner(Static):
    """A line across the top when something is wrong: offline, reconnecting, messages waiting for keys."""

    def __init__(self, widget_id: str) -> None:
        super().__init__("", id=widget_id, markup=False)
        self.display = False

    def say(self, text: str | None, style: str = "bold") -> None:
        self.display = bool(text)
        self.update(plain(text or "", style))


class UploadBar(Static):
    """The progress of a file being sent."""

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("", id="upload-label", markup=False)
        yield ProgressBar(id="upload-progress", show_eta=False)

    def start(self, name: str, total: int) -> Callable[[int, int], None]:
        """Show the bar for a file of `total` bytes; returns what to tell of progress."""
        self.display = True
        self.query_one("#upload-label", Static).update(plain(f"Sending {name}…"))
        bar = self.query_one(ProgressBar)
        bar.update(total=max(total, 1), progress=0)

        def progress(done: int, size: int) -> None:
            bar.update(total=max(size, 1), progress=done)

        return progress

    def finish(self) -> None:
        self.display = False


__all__ = ["Banner", "Composer", "DayItem", "MessageItem", "RoomItem", "RoomList", "Timeline", "UploadBar"]
