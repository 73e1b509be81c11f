"""Client JSON the server stores and serves again: one check at the door, one encoder on the way out.

The rule: whatever the server accepts it can always serve, over HTTP and WebSocket alike, to any
client. So a stored value must be plain JSON every implementation reads the same way: objects with
string keys, arrays, strings of Unicode scalar values (no lone surrogate such as `"\\ud800"`),
integers a double holds exactly, booleans and null, nested at most `MAX_JSON_DEPTH` deep. No
floats (their text form is not portable, and `NaN`, `Infinity` or `1e400` are not JSON at all).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tokenim.core.errors import ErrorCode, TokenIMError

MAX_JSON_DEPTH = 32
# The integers every JSON implementation holds exactly (IEEE 754 doubles), as in I-JSON (RFC 7493).
MAX_JSON_INT = 2**53 - 1


def has_lone_surrogate(text: str) -> bool:
    """True when `text` holds a UTF-16 surrogate code point, which no UTF-8 encoder can write."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_problem(value: object) -> str | None:
    """Why `value` can't be stored and served as client JSON, in words, or None when it can.

    Iterative, so a value nested thousands deep gets an answer, not a RecursionError.
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if has_lone_surrogate(item):
                return "a string holds a lone UTF-16 surrogate (such as \\ud800), which is not Unicode text"
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_JSON_INT <= item <= MAX_JSON_INT:
                return f"an integer is outside ±{MAX_JSON_INT:,} (2^53 - 1)"
        elif isinstance(item, float):
            return "numbers must be integers (no fractions, exponents, NaN or Infinity)"
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"it is nested more than {MAX_JSON_DEPTH} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return "object keys must be strings"
                    if has_lone_surrogate(key):
                        return "an object key holds a lone UTF-16 surrogate (such as \\ud800), which is not Unicode text"
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        else:
            return f"it holds a {type(item).__name__}, which is not JSON"
    return None


def check_client_json(value: object, what: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
    """Refuse, with a clear error naming `what`, a value the server could not serve back to every client."""
    problem = json_problem(value)
    if problem is not None:
        raise TokenIMError(code, f"The {what} can't be accepted: {problem}.")


def encode_json(value: object, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """The one encoder for client JSON the server writes: compact UTF-8, for storage, HTTP bodies and WebSocket frames.

    Raises ValueError (never writes invalid JSON) for NaN, Infinity or a lone surrogate. `default` turns
    other objects (the API layer's response models) into JSON values.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=default)
    return text.encode("utf-8")


def decode_stored_json(text: str) -> Any:
    """Read back client JSON the server stored; raises ValueError if it is no longer servable.

    Rows stored before these checks existed may hold what `check_client_json` now refuses.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"it is nested more than {MAX_JSON_DEPTH} levels deep") from None
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value
