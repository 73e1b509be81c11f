"""Other people's text made safe to show: every character that could steer a terminal is shown escaped.

Message bodies, room names, file names, user ids and error sentences that quote input all come from
someone else. `clean` turns every character that could steer a terminal (C0 and C1 controls, DEL, ESC,
BEL, CR, line and paragraph separators, bidirectional overrides and isolates, lone surrogates) into a
visible escape such as `\\x1b` or `\\u202e`, so a message can neither fake a line of its own nor set a
window title or colours. The CLI (cli/output.py) and the terminal app (tui/) both print through it.
"""

from __future__ import annotations

import unicodedata

# Bidirectional embeddings, overrides, isolates and marks: they reorder what follows them on the line.
_BIDI = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
# Categories escaped whole: controls (C0, DEL, C1), line/paragraph separators, surrogates.
_ESCAPED_CATEGORIES = frozenset(["Cc", "Zl", "Zp", "Cs"])


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code in _BIDI or unicodedata.category(ch) in _ESCAPED_CATEGORIES:
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
    return ch


def clean(text: object) -> str:
    """One line of text that is safe to print: every control, separator and bidi character is shown escaped."""
    s = str(text)
    if s.isprintable() and not any(ord(c) in _BIDI for c in s):
        return s
    return "".join(_escape_char(c) for c in s)


def clean_lines(text: str) -> list[str]:
    """A multi-line text as lines that are each safe; `\\r\\n` and `\\n` end a line, anything else is escaped."""
    return [clean(line) for line in text.replace("\r\n", "\n").split("\n")]


__all__ = ["clean", "clean_lines", "human_size"]


def human_size(n: int) -> str:
    """Bytes as a person reads them: `812 bytes`, `4.2 KB`, `1.5 MB`."""
    if n < 1000:
        return f"{n} byte{'s' if n != 1 else ''}"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"
