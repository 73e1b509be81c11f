"""Human-visible names (room names, e-mail addresses): text that ends up on other people's screens.

A name may not hold control characters (C0, DEL, C1: a terminal obeys ESC, BEL, CR...), line or
paragraph separators, or the Unicode bidirectional controls (overrides, embeddings, isolates and
marks), which can make a name display as something else than it is.
"""

from __future__ import annotations

import unicodedata

from tokenim.core.content import has_lone_surrogate
from tokenim.core.errors import ErrorCode, TokenIMError

# Unicode's Bidi_Control characters: ALM, LRM, RLM, LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def name_problem(text: str) -> str | None:
    """Why `text` can't be a human-visible name, in words, or None when it can."""
    if has_lone_surrogate(text):
        return "it holds a lone UTF-16 surrogate, which is not Unicode text"
    for ch in text:
        if ch in BIDI_CONTROLS:
            return f"it holds the bidirectional control character U+{ord(ch):04X}, which can disguise text"
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"it holds the control character U+{ord(ch):04X}"
        if category in ("Zl", "Zp"):
            return f"it holds the line or paragraph separator U+{ord(ch):04X}"
    return None


def check_name(text: str, what: str) -> str:
    """A human-visible name without surrounding spaces; refuses control characters and a name with nothing visible."""
    problem = name_problem(text)
    if problem is not None:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"The {what} can't be used: {problem}.")
    stripped = text.strip()
    if all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in stripped):
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"The {what} can't be empty or only spaces and invisible characters.")
    return stripped
