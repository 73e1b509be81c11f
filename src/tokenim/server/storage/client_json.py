"""Client JSON in database columns: written with the one encoder, read back with a guard.

Rows written before the content checks existed may hold JSON the server can't serve (a lone surrogate,
NaN, nesting hundreds deep). Such a value is withheld (served as `{}`) with a warning in the log, so one
old row can never turn someone's sync into a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from tokenim.core.content import decode_stored_json, encode_json

log = logging.getLogger("tokenim.server.storage")


def dump_client_json(value: object) -> str:
    """The column text for a client JSON value: exactly what the server will serve."""
    return encode_json(value).decode("utf-8")


def load_client_json(text: str, what: str) -> Any:
    """Read a stored client JSON value; an unservable one is withheld as `{}` (`what` names it in the log)."""
    try:
        return decode_stored_json(text)
    except ValueError as exc:
        log.warning("%s withheld: the stored JSON can't be served (%s)", what, exc)
        return {}
