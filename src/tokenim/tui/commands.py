"""What the app can be asked to do, by key or by a `/command` typed in the composer: one table, which the
help screen (`?`) and docs/cli.md show. New features (replies, edits, reactions…) add rows here and a
handler in tui/actions.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Command:
    """`/name ARGS` in the composer; `key` does the same from the room list or the timeline (asking for ARGS)."""

    name: str
    args: str
    key: str
    text: str
    action: str  # the ChatApp handler: `do_<action>(argument)`
    ask: str = ""  # what a key asks for before doing it (empty: nothing to ask)


COMMANDS = [
    Command("create", "NAME [@user …]", "n", "create a room and invite people", "create", "Room name, then people (plans @bob)"),
    Command("dm", "@user", "d", "open the direct chat with someone (made if needed)", "dm", "Direct chat with (@bob)"),
    Command("invite", "@user …", "i", "invite people into this room", "invite", "Invite (@bob @carol)"),
    Command("accept", "", "a", "accept the invitation to this room", "accept"),
    Command("decline", "", "x", "decline the invitation to this room", "decline"),
    Command("leave", "", "l", "leave this room", "leave"),
    Command("rename", "NAME", "r", "rename this room (room admins)", "rename", "New name"),
    Command("members", "", "m", "who is in this room, and how each is verified", "members"),
    Command("file", "PATH", "f", "send a file, encrypted (a progress bar shows)", "file", "File to send"),
    Command("save", "[PATH]", "s", "save the selected attachment (default: its name, in the current folder)", "save"),
    Command("verify", "[@user]", "v", "verify someone by comparing emoji (they verify you at the same time)", "verify"),
    Command("help", "", "?", "this help", "help"),
    Command("quit", "", "ctrl+q", "quit", "quit"),
]

BY_NAME = {c.name: c for c in COMMANDS} | {"new": COMMANDS[0], "direct": COMMANDS[1], "join": COMMANDS[3]}

KEYS = [
    ("enter", "in the composer: send; in the room list: open the room"),
    ("ctrl+j / alt+enter", "a new line in the message"),
    ("up / down", "in the composer: earlier messages sent (from its first or last line)"),
    ("tab / shift+tab", "move between the room list, the timeline and the composer"),
    ("escape", "leave the composer (the letter keys then act), or close a dialog"),
    ("alt+up / alt+down", "previous / next room, from anywhere"),
    ("f1", "help, from anywhere"),
]


@dataclass(frozen=True, slots=True)
class Typed:
    """A composer line read as a command (`command` None: a message to send as it is)."""

    command: Command | None
    argument: str
    text: str = ""
    unknown: str = ""  # a `/word` that names no command


def read_line(text: str) -> Typed:
    """`/invite @bob` → the invite command with "@bob"; `//x` sends "/x"; anything else is a message."""
    if text.startswith("//"):
        return Typed(None, "", text[1:])
    if not text.startswith("/") or text.startswith("/ "):
        return Typed(None, "", text)
    word, _, rest = text[1:].partition(" ")
    command = BY_NAME.get(word.strip().lower())
    if command is None:
        return Typed(None, "", text, unknown=word)
    return Typed(command, rest.strip())


def help_lines() -> list[tuple[str, str]]:
    """(keys, what) rows for the help screen."""
    rows = [(k, t) for k, t in KEYS]
    for c in COMMANDS:
        rows.append((f"{c.key:6} /{c.name} {c.args}".rstrip(), c.text))
    return rows


__all__ = ["BY_NAME", "COMMANDS", "KEYS", "Command", "Typed", "help_lines", "read_line"]
