"""Human-visible names (room names, e-mail addresses): text that ends up on other people's screens.

A name may not hold control characters (C0, DEL, C1: a terminal obeys ESC, BEL, CR...), line or
paragraph separators, the Unicode bidirectional controls (overrides, embeddings, isolates and
marks), other format characters (category Cf: zero-width spaces and joiners, invisible operators,
tags...), private-use, unassigned or surrogate code points. Each could make a name display as
something else than it is, or two different names look the same. The one exception is U+200D ZERO
WIDTH JOINER between two visible characters, which joins emoji sequences. The rest of Unicode's
default-ignorable code points are refused too (the combining grapheme joiner, variation selectors,
Hangul fillers, Khmer inherent vowels, Mongolian free variation selectors...): they draw as nothing,
so `plans` and `pla\u034fns` would look the same. U+FE0F (emoji presentation) is kept right after a
symbol (category So), where it turns `\u2764` into the red heart. A name must also show something:
whitespace, format characters, combining marks and the braille blank alone show nothing.

Room names are unique among a person's rooms by `name_key`: Unicode's NFKC_Casefold (default
ignorables dropped, compatibility forms folded, case folded), so `café` and `cafe\u0301`, or
`\uff50\uff4c\uff41\uff4e\uff53` (fullwidth) and `Plans`, count as the same name.
"""

from __future__ import annotations

import unicodedata

from tokenim.core.content import has_lone_surrogate
from tokenim.core.errors import ErrorCode, TokenIMError

# Unicode's Bidi_Control characters: ALM, LRM, RLM, LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ZERO_WIDTH_JOINER = "\u200d"
EMOJI_PRESENTATION = "\ufe0f"
# Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt; checked against the `regex` module's
# \p{Default_Ignorable_Code_Point}), as inclusive ranges: Python's unicodedata has no such property. Most are
# also Cf or Cn and refused as such; this adds the ones that are letters (Lo: the Hangul fillers) or marks (Mn:
# U+034F, the variation selectors, U+17B4/5, the Mongolian free variation selectors).
DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space, non-joiner, joiner, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, isolates, deprecated format controls
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors 1-16
    (0xFEFF, 0xFEFF),  # zero-width no-break space (byte order mark)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),  # unassigned
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol format controls
    (0xE0000, 0xE0FFF),  # tags, variation selectors 17-256, unassigned
)
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


def is_default_ignorable(ch: str) -> bool:
    """True for a code point Unicode says a renderer may show as nothing (Default_Ignorable_Code_Point)."""
    cp = ord(ch)
    return any(low <= cp <= high for low, high in DEFAULT_IGNORABLE_RANGES)


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


def _presents_emoji(text: str, i: int) -> bool:
    """U+FE0F at `i` right after a symbol (an emoji such as U+2764), which it asks to draw in colour."""
    return i > 0 and unicodedata.category(text[i - 1]) == "So"


def name_problem(text: str) -> str | None:
    """Why `text` can't be a human-visible name, in words, or None when it can."""
    if has_lone_surrogate(text):
        return "it holds a lone UTF-16 surrogate, which is not Unicode text"
    for i, ch in enumerate(text):
        if ch in BIDI_CONTROLS:
            return f"it holds the bidirectional control character U+{ord(ch):04X}, which can disguise text"
        if ch == ZERO_WIDTH_JOINER and _joins_visible(text, i):
            continue
        if ch == EMOJI_PRESENTATION and _presents_emoji(text, i):
            continue
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            return f"it holds {_REFUSED_CATEGORIES[category]} U+{ord(ch):04X}"
        if is_default_ignorable(ch):
            return f"it holds U+{ord(ch):04X}, which shows as nothing and can make one name look like another"
    return None


def name_key(text: str) -> str:
    """What two names must differ in to be different names: NFKC_Casefold (default ignorables dropped,
    compatibility forms folded, case folded) with runs of spaces made one, so look-alikes compare equal."""
    visible = "".join(ch for ch in text if not is_default_ignorable(ch))
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", visible).casefold())
    return " ".join(folded.split())


def compatibility_problem(text: str) -> str | None:
    """Why `text` holds a compatibility form (fullwidth `\uff41`, ligature `\ufb01`, superscript `\u00b2`...) that looks like
    other, plain text, or None. For identifiers compared as typed, such as e-mail addresses."""
    for ch in text:
        plain = unicodedata.normalize("NFKC", ch)
        if plain != unicodedata.normalize("NFC", ch):
            return f"it holds U+{ord(ch):04X}, a look-alike of {plain!r}: write that instead"
    return None


def email_problem(email: str) -> str | None:
    """Why `email` can't be an e-mail address shown to people: the name rule, and no invisible character at all
    (not even a joiner) nor a compatibility form (`\uff41@b.c` would pass for `a@b.c`), or None."""
    problem = name_problem(email) or compatibility_problem(email)
    if problem is None and (hidden := next((ch for ch in email if is_default_ignorable(ch)), None)) is not None:
        problem = f"it holds U+{ord(hidden):04X}, which shows as nothing"
    return problem


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
    """A room name: a name (above) that does not start with `!` or `@` (or a compatibility form of them), which
    begin room and user ids, so a name can never pass for another room's id or for a person (both are how
    commands address them)."""
    name = check_name(text, "room name")
    first = unicodedata.normalize("NFKC", name).lstrip()[:1]  # fullwidth `!x` and `@bob` are `!x` and `@bob` in NFKC
    if first in ("!", "@"):
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST,
            f"A room name can't start with '{first}' or a look-alike of it: that is how room and user ids begin.",
        )
    return name


def printable(text: object, limit: int = 200) -> str:
    """`text` as one line safe to show in a mail or a log: every control, separator, invisible format,
    private-use or unassigned character escaped (`\\u202e`), and at most `limit` characters (then `…`)."""
    s = str(text)
    if len(s) > limit:
        s = s[:limit] + "…"
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in _REFUSED_CATEGORIES else c for c in s)
