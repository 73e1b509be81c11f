"""Canonical JSON: the exact bytes that get signed, identical on every machine."""

from __future__ import annotations

import json
from typing import Any


def _reject_floats(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError("canonical JSON does not allow floating point numbers")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError("canonical JSON object keys must be strings")
            _reject_floats(v)
    elif isinstance(value, (list, tuple)):
        # json.dumps writes tuples as arrays, so they must be checked like lists.
        for v in value:
            _reject_floats(v)


def canonical_json(value: Any) -> bytes:
    """Serialise with sorted keys, no insignificant whitespace, UTF-8, integers only.

    Floats are rejected because their text form is not portable between implementations.
    """
    _reject_floats(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8")
