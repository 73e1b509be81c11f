"""Linking a new device: a rendezvous where the server only relays (docs/protocol.md, "Linking a new device").

A new device opens a slot for a user (no token: it has none yet) and gets a mailbox token; a device of that
user claims the slot by the code's first part; then each side posts numbered opaque messages and reads the
other's. Slots expire after 10 minutes, are claimed once, and are capped per address and server-wide, never
per user: opening a slot needs no token, so a per-user cap would let anyone block a user's linking.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Literal

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.link import (
    CODE_ALPHABET,
    LINK_ID_LENGTH,
    LINK_TTL_MS,
    MAX_LINK_MESSAGES,
    MAX_NEW_SIDE_CHARS,
    MAX_NEW_SIDE_MESSAGES,
    MAX_OPEN_LINKS,
    MAX_OPEN_LINKS_PER_ADDRESS,
    LinkClaimResponse,
    LinkMessage,
    LinkMessagesResponse,
    LinkOpenResponse,
    LinkPolicy,
    LinkSide,
)
from tokenim.server.services.common import Context, Requester, new_secret, secret_hash
from tokenim.server.services.limits import Kind, describe_wait, rate_limited
from tokenim.server.storage.database import Tx
from tokenim.server.storage.link import APPROVED, CLAIMED, FAILED, OPEN, LinkSlot, LinkStore

TOKEN_PREFIX = "link_"  # tells a slot's mailbox token from an access token in the same header
KEEP_ENDED_MS = 60 * 60 * 1000  # an ended or expired slot is remembered an hour, so a reused code says so
NO_SLOT = "No device is waiting to be linked with that code: check its first part, or start again on the new device."


class LinkService:
    """Slots, claims and mailboxes; each change with its audit record in one transaction."""

    def __init__(
        self,
        ctx: Context,
        policy: LinkPolicy,
        requester: Callable[[str | None], Awaitable[Requester]],
        store: LinkStore | None = None,
    ) -> None:
        self._ctx = ctx
        self._policy = policy
        self._requester = requester
        self._store = store or LinkStore()
        # Addresses are kept only as an HMAC under a key that lives in memory: enough to count a client's
        # waiting slots (10 minutes), useless for recovering the address from the database.
        self._address_key = secrets.token_bytes(32)

    async def do_open(self, user_id: str, address: str) -> LinkOpenResponse:
        """Open a slot for `user_id`, unless this address, or the whole server, already has too many waiting.
        An unknown user counts toward the address's lookup limit."""
        try:
            return await self._open(user_id, address)
        except TokenIMError as err:
            if err.code is ErrorCode.UNKNOWN_USER:
                await self._ctx.limiter.record_failure(Kind.LOOKUP, address=address)
            raise

    async def _open(self, user_id: str, address: str) -> LinkOpenResponse:
        now = self._ctx.clock.now_ms()
        token = TOKEN_PREFIX + new_secret()
        address_hash = hmac.new(self._address_key, address.encode(), "sha256").hexdigest()
        async with self._ctx.db.write() as tx:
            await self._ctx.limiter.check(tx, Kind.LOOKUP, address=address)
            if await self._ctx.accounts.get_user(tx, user_id) is None:
                raise TokenIMError(ErrorCode.UNKNOWN_USER, f"There is no user {user_id} on this server.")
            await self._store.delete_stale(tx, now - KEEP_ENDED_MS)
            recent, earliest = await self._store.count_recent(tx, now, address_hash=address_hash)
            if recent >= MAX_OPEN_LINKS_PER_ADDRESS:
                raise rate_limited(
                    f"{MAX_OPEN_LINKS_PER_ADDRESS} links were started from this address in the last 10 minutes: "
                    f"start again in {describe_wait(earliest - now)}, when the oldest is 10 minutes old.",
                    earliest - now,
                )
            recent, earliest = await self._store.count_recent(tx, now)
            if recent >= MAX_OPEN_LINKS:
                raise rate_limited(
                    "Too many links were started on this server in the last 10 minutes: "
                    f"try again in {describe_wait(earliest - now)}.",
                    earliest - now,
                )
            link_id = await self._new_link_id(tx)
            slot = LinkSlot(secret_hash(link_id), user_id, secret_hash(token), OPEN, None, None, now + LINK_TTL_MS)
            await self._store.insert_slot(tx, slot, address_hash, now)
            # No audit record in the user's log: anyone may open a slot for anyone, so such records would let a
            # stranger flood the log. The user's log starts with `link.claimed`, made by one of their devices.
        return LinkOpenResponse(link_id=link_id, token=token, expires_at=slot.expires_at, policy=self._policy.value)

    async def _new_link_id(self, tx: Tx) -> str:
        while True:
            link_id = "".join(secrets.choice(CODE_ALPHABET) for _ in range(LINK_ID_LENGTH))
            if await self._store.get_slot(tx, secret_hash(link_id)) is None:
                return link_id

    def _check_live(self, slot: LinkSlot) -> None:
        if slot.state == FAILED:
            raise TokenIMError(
                ErrorCode.LINK_FAILED,
                "The link was stopped on the other device.",
                details={"reason": slot.fail_reason or "error"},
            )
        if slot.state == APPROVED:
            raise TokenIMError(ErrorCode.LINK_USED, "This link code was already used: a code works once.")
        if slot.expires_at <= self._ctx.clock.now_ms():
            raise TokenIMError(ErrorCode.LINK_EXPIRED, "This link code has expired (codes last 10 minutes): start again.")

    async def do_claim(self, requester: Requester, link_id: str) -> LinkClaimResponse:
        """The approving device takes the slot: only a device of the slot's user, only once."""
        async with self._ctx.db.write() as tx:
            slot = await self._store.get_slot(tx, secret_hash(link_id))
            if slot is None or slot.user_id != requester.user_id:
                raise TokenIMError(ErrorCode.NOT_FOUND, NO_SLOT)
            self._check_live(slot)
            if slot.state != OPEN or not await self._store.claim(tx, slot.id_hash, requester.device_id):
                raise TokenIMError(ErrorCode.LINK_USED, "This link code was already used: a code works once.")
            await self._ctx.auditor.record(tx, "link.claimed", requester.user_id, requester.device_id)
        return LinkClaimResponse(link_id=link_id, expires_at=slot.expires_at, policy=self._policy.value)

    async def _side(self, tx: Tx, link_id: str, authorization: str | None) -> tuple[LinkSlot, LinkSide, Requester | None]:
        """Which side is asking: the new device (its mailbox token) or the device that claimed the slot."""
        slot = await self._store.get_slot(tx, secret_hash(link_id))
        bearer = (authorization or "").removeprefix("Bearer ").strip()
        if bearer.startswith(TOKEN_PREFIX):
            if slot is None or not secrets.compare_digest(slot.token_hash, secret_hash(bearer)):
                raise TokenIMError(ErrorCode.UNAUTHORIZED, "This link token is not valid for that link.")
            return slot, LinkSide.NEW, None
        requester = await self._requester(authorization)
        if slot is None or slot.user_id != requester.user_id:
            raise TokenIMError(ErrorCode.NOT_FOUND, NO_SLOT)
        if slot.state in (OPEN, CLAIMED) and slot.approver_device != requester.device_id:
            raise TokenIMError(ErrorCode.FORBIDDEN, "Another device is approving this link (or none has claimed it yet).")
        return slot, LinkSide.APPROVER, requester

    async def do_post(self, link_id: str, authorization: str | None, seq: int, body: str) -> None:
        """Put message `seq` in the caller's side of the mailbox; the same message again is harmless."""
        async with self._ctx.db.write() as tx:
            slot, side, _ = await self._side(tx, link_id, authorization)
            self._check_live(slot)
            existing = await self._store.get_message(tx, slot.id_hash, side.value, seq)
            if existing is not None:
                if existing != body:
                    raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Message {seq} of this link was already sent, differently.")
                return
            count, total = await self._store.side_size(tx, slot.id_hash, side.value)
            if side is LinkSide.NEW:
                self._check_new_side(slot, seq, count, total + len(body))
            elif count >= MAX_LINK_MESSAGES:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, f"A link carries at most {MAX_LINK_MESSAGES} messages a side.")
            await self._store.insert_message(tx, slot.id_hash, side.value, seq, body)

    @staticmethod
    def _check_new_side(slot: LinkSlot, seq: int, count: int, total: int) -> None:
        """The new device has no account: it may post only what the protocol has it send (N1, N2, N3), small,
        and nothing but N1 until a device of the user has claimed the slot."""
        if slot.state == OPEN and seq != 1:
            raise TokenIMError(
                ErrorCode.FORBIDDEN, "Until a device claims this link, the new device may post only its first message."
            )
        if seq > MAX_NEW_SIDE_MESSAGES or count >= MAX_NEW_SIDE_MESSAGES:
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST, f"The new device posts at most {MAX_NEW_SIDE_MESSAGES} messages on a link."
            )
        if total > MAX_NEW_SIDE_CHARS:
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"The new device's messages on a link may total at most {MAX_NEW_SIDE_CHARS} characters.",
            )

    async def access_messages(self, link_id: str, authorization: str | None, after: int) -> LinkMessagesResponse:
        """The other side's messages numbered above `after`."""
        async with self._ctx.db.read() as tx:
            slot, side, _ = await self._side(tx, link_id, authorization)
            if slot.state == APPROVED:
                return LinkMessagesResponse(messages=[], state="approved")
            self._check_live(slot)
            other = LinkSide.APPROVER if side is LinkSide.NEW else LinkSide.NEW
            rows = await self._store.messages_after(tx, slot.id_hash, other.value, after)
        state: Literal["open", "claimed"] = "open" if slot.state == OPEN else "claimed"
        return LinkMessagesResponse(messages=[LinkMessage(seq=seq, body=body) for seq, body in rows], state=state)

    async def do_close(self, link_id: str, authorization: str | None, outcome: str, reason: str | None) -> None:
        """End a slot: `approved` by its approver, or `failed` (with a reason the other side is shown) by either."""
        async with self._ctx.db.write() as tx:
            slot, side, requester = await self._side(tx, link_id, authorization)
            device = requester.device_id if requester else None
            if outcome == "approved":
                if side is not LinkSide.APPROVER or slot.state != CLAIMED:
                    raise TokenIMError(ErrorCode.FORBIDDEN, "Only the device that claimed a link can report it approved.")
                self._check_live(slot)
                await self._store.close(tx, slot.id_hash, APPROVED, None)
                await self._ctx.auditor.record(tx, "link.approved", slot.user_id, device)
                return
            if slot.state == FAILED:
                return  # both sides gave up: the first reason stands
            self._check_live(slot)
            await self._store.close(tx, slot.id_hash, FAILED, reason or "error")
            if slot.state == CLAIMED:  # an unclaimed slot never involved the user: nothing for their log
                await self._ctx.auditor.record(tx, "link.failed", slot.user_id, device, side=side.value, reason=reason or "error")
