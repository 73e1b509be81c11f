"""How the app shows rooms, people and messages: Rich `Text` built from plain strings, never from markup.

Everything here comes from other people (bodies, room names, file names, user ids). It is made into `Text`
objects directly, so `[red]x` or `[link=…]` is shown as typed and never read as Rich markup, and every
character that could steer a terminal passes through `clean` (core/display.py) first, as in the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum

from rich.text import Text

from tokenim.client import Message
from tokenim.client.messages import KEY_FILE_WHY
from tokenim.core.display import clean, clean_lines, human_size
from tokenim.protocol.api import RoomSummary

INDENT = "        "  # continuation lines sit under the first line's text, after the time
MAX_SHOWN_LINES = 40  # a longer message is cut on screen (with a note); saving or `tokenim read` shows it all


def plain(text: object, style: str = "") -> Text:
    """Someone else's text as one safe line: escaped, never markup."""
    return Text(clean(text), style=style)


class Trust(StrEnum):
    """How far the sender of a message is checked, as the badge beside their name says."""

    OWN = "own"  # this user's own device
    VERIFIED = "verified"  # the person was verified (emoji or safety number) and the device is signed
    UNVERIFIED = "unverified"  # the device is signed by their master key, the person not verified by you yet
    CHANGED = "changed"  # verified once, but their master key changed since: verify again
    UNSIGNED = "unsigned"  # the device is not signed by the master key you trust for them
    REVOKED = "revoked"  # the device was revoked by its owner
    KEY_FILE = "key_file"  # read with a room key from a key file or backup: who sent it is unknown


@dataclass(frozen=True, slots=True)
class Badge:
    mark: str
    style: str
    meaning: str


BADGES = {
    Trust.OWN: Badge("", "", "your own device"),
    Trust.VERIFIED: Badge("✔", "bold green", "verified by you (emoji or safety number)"),
    Trust.UNVERIFIED: Badge("?", "yellow", "not verified by you yet: compare emoji with them (v)"),
    Trust.CHANGED: Badge("⚠", "bold red", "their master key changed since you verified them: verify again"),
    Trust.UNSIGNED: Badge("!", "bold red", "this device is not signed by the master key you trust for them"),
    Trust.REVOKED: Badge("✘", "bold red", "this device was revoked by its owner"),
    Trust.KEY_FILE: Badge("⚿", "yellow", "read with a key from a file or backup: who sent it can't be vouched for"),
}


def trust_of(message: Message, me: str, verify_again: bool = False) -> Trust:
    """The badge for a message's sender, from what the SDK says (`verified`, `verified_by`, `why_not`).
    `verify_again`: the SDK's verification status of the sender says their key changed since verified."""
    why = message.why_not or ""
    if why.endswith(" was revoked"):
        return Trust.REVOKED
    if why.startswith(KEY_FILE_WHY):
        return Trust.KEY_FILE
    if not message.verified:
        return Trust.UNSIGNED
    if message.sender == me:
        return Trust.OWN
    if message.verified_by:
        return Trust.VERIFIED
    return Trust.CHANGED if verify_again else Trust.UNVERIFIED


def person(user_id: str, me: str) -> str:
    """`@bob` for someone on this user's server, the full `@bob:other.example` otherwise (escaped)."""
    local, _, server = user_id.partition(":")
    return clean(local if server and server == me.partition(":")[2] else user_id)


def room_title(room: RoomSummary, me: str) -> str:
    """A room's name, or for a direct chat the other people in it (escaped)."""
    if room.kind == "direct":
        others = [person(m, me) for m in room.members if m != me] or [person(me, me)]
        return ", ".join(others)
    return clean(room.name)


def day_label(ms: int, tz: tzinfo | None) -> str:
    """The day separator's text: `Tuesday 3 March 2026`."""
    day = datetime.fromtimestamp(ms / 1000, tz=tz)
    return f"{day:%A} {day.day} {day:%B %Y}"


def day_of(ms: int, tz: tzinfo | None) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=tz).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class Shown:
    """How one message is drawn: whose it is, how trusted, and whether it mentions this user or waits for its key."""

    message: Message
    me: str
    trust: Trust
    mention: bool = False
    awaiting_key: bool = False


def message_text(shown: Shown, tz: tzinfo | None) -> Text:
    """One message: `HH:MM sender badge: body`, continuation lines indented under it."""
    m = shown.message
    out = Text()
    out.append(datetime.fromtimestamp(m.ts / 1000, tz=tz).strftime("%H:%M") + "  ", style="dim")
    if m.event == "key_rotated":
        if m.notice:
            out.append(f"-- {clean(m.notice)}", style="dim italic")
        else:
            out.append(f"!! {clean(m.warning)}", style="bold red")
        return out
    out.append(person(m.sender, shown.me), style="bold cyan" if m.sender == shown.me else "bold")
    badge = BADGES[shown.trust]
    if badge.mark:
        out.append(f" {badge.mark}", style=badge.style)
    out.append(": ")
    if shown.awaiting_key:
        out.append("🔒 waiting for the key to this message; it fills in when the key arrives", style="italic yellow")
        return out
    if m.warning is not None:
        out.append(f"!! {clean(m.warning)}", style="bold red")
        return out
    if m.file is not None:
        name, size = clean(m.file.get("name", "?")), human_size(int(m.file.get("size", 0)))
        out.append(f"📎 {name} ({size})", style="underline")
        out.append("  [s: save]", style="dim")
        return out
    lines = clean_lines(m.body or "")
    if len(lines) > MAX_SHOWN_LINES:
        lines = [*lines[:MAX_SHOWN_LINES], f"… {len(lines) - MAX_SHOWN_LINES} more lines"]
    out.append(lines[0])
    for line in lines[1:]:
        out.append("\n" + INDENT + line)
    if shown.mention:
        out.stylize("on #3a2a00")
    return out


def room_label(title: str, room: RoomSummary, unread: int, mentions: int, attention: bool) -> Text:
    """A line of the room list: `# plans  3 @1`, `  @bob`, `✉ plans  invited`."""
    mark = "✉ " if room.membership == "invite" else ("  " if room.kind == "direct" else "# ")
    out = Text(mark, style="dim")
    out.append(title, style="bold" if unread else "")
    if room.membership == "invite":
        out.append("  invited", style="italic yellow")
    if unread:
        out.append(f"  {unread}", style="bold")
    if mentions:
        out.append(f" @{mentions}", style="bold magenta")
    if attention:
        out.stylize("reverse")
    return out


__all__ = [
    "BADGES",
    "Shown",
    "Trust",
    "day_label",
    "day_of",
    "human_size",
    "message_text",
    "person",
    "plain",
    "room_label",
    "room_title",
    "trust_of",
]
