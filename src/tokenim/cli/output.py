"""Everything the CLI prints passes through here: other people's text is escaped, times and sizes are human.

Message bodies, room names, file names, user ids and error sentences that quote input all come from
someone else: `clean` (core/display.py, shared with the terminal app) shows every character that could
steer a terminal as a visible escape such as `\\x1b` or `\\u202e`. A multi-line message keeps its lines,
each continuation marked as part of it.
"""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from tokenim.client.messages import KEY_FILE_WHY
from tokenim.core.display import clean, clean_lines, human_size

CONTINUATION = "  | "


def block(first: str, text: str) -> str:
    """`first` followed by a multi-line text whose continuation lines are marked as belonging to it."""
    lines = clean_lines(text)
    return "\n".join([first + lines[0], *(CONTINUATION + line for line in lines[1:])])


def emit(text: str, stream: TextIO | None = None) -> None:
    """Print human output. A last guard: whatever reached here unescaped is escaped, line by line."""
    out = stream or sys.stdout
    print("\n".join(clean(line) for line in text.split("\n")), file=out, flush=True)


def emit_json(value: object, stream: TextIO | None = None) -> None:
    """Print JSON: ASCII only, so control characters travel as `\\u001b` escapes, never raw."""
    print(json.dumps(value, ensure_ascii=True), file=stream or sys.stdout, flush=True)


def when(ms: int) -> str:
    """A time (milliseconds since the epoch) as a person reads it, in UTC."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: int) -> str:
    """`604800` -> `7 days`; `5400` -> `1 hour 30 minutes`."""
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return " ".join(parts[:2]) or "0 seconds"


def size(n: int) -> str:
    """Bytes as a person reads them: `812 bytes`, `4.2 KB`, `1.5 MB`."""
    return human_size(n)


def message_text(m: dict[str, Any]) -> str:
    """One message for the terminal: a header line, then its body with continuation lines marked."""
    room, sender = clean(m["room"]), clean(m["sender"])
    if m.get("event") == "key_rotated":
        return f"[{room}] -- {clean(m['notice'])}" if m.get("notice") else f"[{room}] !! {clean(m.get('warning'))}"
    if "warning" in m:
        return block(f"[{room}] {sender}: !! ", str(m["warning"]))
    # Discreet: a sender you have not verified (SAS or safety number) gets a short mark; `why_not` says why.
    mark = " (unverified device)" if not m["verified"] else (" (unverified)" if m.get("why_not") else "")
    if str(m.get("why_not") or "").startswith(KEY_FILE_WHY):  # the device may be signed: the key's origin is unknown
        mark = " (key from a file or backup)"
    head = f"[{room}] {sender}{mark}: "
    if "file" in m:
        f = m["file"]
        # Quoted: an event id starts with `$`, which a shell would expand to nothing if pasted bare.
        return f"{head}[file {clean(f['name'])}, {size(int(f['size']))}: tokenim download {shlex.quote(clean(m['id']))}]"
    return block(head, m["body"] or "")


PUBLIC_FILE_FIELDS = ("name", "size", "mimetype")


def public_message(m: dict[str, Any]) -> dict[str, Any]:
    """A message as `--json` prints it: a file is described (name, size, type), never its key or blob id."""
    if "file" not in m:
        return m
    return {**m, "file": {k: m["file"][k] for k in PUBLIC_FILE_FIELDS if k in m["file"]}}


__all__ = [
    "CONTINUATION",
    "PUBLIC_FILE_FIELDS",
    "block",
    "clean",
    "clean_lines",
    "duration",
    "emit",
    "emit_json",
    "message_text",
    "public_message",
    "size",
    "when",
]
