"""Forked profiles: every send of a device carries its next sequence number, and a number already used
(by another copy of the same profile, copied or restored from a backup) is refused with `profile_forked`.
Sends may arrive a little out of order (a client sends several at once): the server remembers which of
the 62 numbers below the highest were used.

Two copies of one profile share their Megolm and Olm ratchets: both would encrypt with the same key and
index. Only the first send of each number is accepted, so the stale copy learns it is stale on its first
send and stops (docs/protocol.md, "Forked profiles").
"""

from __future__ import annotations

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.services.common import Requester
from tokenim.server.storage.accounts import AccountStore
from tokenim.server.storage.database import Tx


def forked(seq: int, last: int) -> TokenIMError:
    return TokenIMError(
        ErrorCode.PROFILE_FORKED,
        f"This device already sent with sequence number {last} (this send has {seq}): it is being used from "
        "two copies of its profile, and this copy is the out-of-date one. Nothing was sent.",
        details={"device_seq": seq, "last_seq": last},
    )


async def take_device_seq(tx: Tx, accounts: AccountStore, requester: Requester, seq: int | None) -> int | None:
    """Record the send's sequence number; returns None if accepted, else the device's last number.

    Writes only when it accepts, so a refusal leaves nothing to undo. Sends without a number (older
    clients) are not checked."""
    if seq is None:
        return None
    last = await accounts.take_send_seq(tx, requester.user_id, requester.device_id, seq)
    if last == -1:
        raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, "This device no longer exists: nothing was sent.")
    return last
