"""Human-visible names (room names, e-mail addresses): text that ends up on other people's screens.

A name may not hold control characters (C0, DEL, C1: a terminal obeys ESC, BEL, CR...), line or
paragraph separators, the Unicode bidirectional controls (overrides, embeddings, isolates and
marks), other format characters (category Cf: zero-width spaces and joiners, invisible operators,
tags...), private-use, unassigned or surrogate code points. Each could make a name display as
something else than it is, or two different names look the same. The one exception is U+200D ZERO
WIDTH JOINER between two visible characters, which joins emoji sequences. A name must also show
something: whitespace, format characters, combining marks and the Hangul and braille fillers alone
show nothing.
"""

from __future__ import annotations

import unicodedata

from tokenim.core.content import has_lone_surrogate
from tokenim.core.errors import ErrorCode, TokenIMError

# Unicode's Bidi_Control characters: ALM, LRM, RLM, LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ZERO_WIDTH_JOINER = "\u200d"
# Letters and symbols that draw as blank space: Hangul fillers, halfwidth Hangul filler, braille blank.
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_REFUSED_CATEGORIES = {
    "Cc": "the control character",
    "Zl": "the line separator",
    "Zp": "the paragraph separator",
    "Cf": "the invisible format character",
    "Co": "the private-use character",
    "Cn": "the unassigned code point",
    "Cs": "the surrogate code point",
}


def is_invisible(ch: str) -> bool:
    """True for a character that shows nothing by itself: whitespace, format, combining mark or a blank filler."""
    return ch.isspace() or ch in BLANK_LOOKING or unicodedata.category(ch) in ("Cf", "Mn", "Me", "Mc", "Zs")


def _joins_visible(text: str, i: int) -> bool:
    """A zero-width joiner at `i` with a visible character after it and something shown before it (an emoji,
    possibly followed by a variation selector or skin tone)."""
    if i == 0 or i == len(text) - 1 or is_invisible(text[i + 1]):
        return False
    before = text[i - 1]
    return not (before.isspace() or before in BLANK_LOOKING or unicodedata.category(before) in ("Cf", "Zs"))


def name_problem(text: str) -> str | None:
    """Why `text` can't be a human-visible name, in words, or None when it can."""
    if has_lone_surrogate(text):
        return "it holds a lone UTF-16 surrogate, which is not Unicode text"
    for i, ch in enumerate(text):
        if ch in BIDI_CONTROLS:
            return f"it holds the bidirectional control character U+{ord(ch):04X}, which can disguise text"
        if ch == ZERO_WIDTH_JOINER and _joins_visible(text, i):
            continue
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            return f"it holds {_REFUSED_CATEGORIES[category]} U+{ord(ch):04X}"
    return None


def check_name(text: str, what: str) -> str:
    """A human-visible name without surrounding spaces; refuses control characters and a name with nothing visible."""
    problem = name_problem(text)
    if problem is not None:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"The {what} can't be used: {problem}.")
    stripped = text.strip()
    if all(is_invisible(ch) for ch in stripped):
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"The {what} can't be empty or only spaces, marks and invisible characters."
        )
    return stripped


def check_room_name(text: str) -> str:
    """A room name: a name (above) that does not start with `!` or `@`, which begin room and user ids, so a
    name can never pass for another room's id or for a person (both are how commands address them)."""
    name = check_name(text, "room name")
    if name[0] in "!@":
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"A room name can't start with '{name[0]}': that is how room and user ids begin."
        )
    return name
