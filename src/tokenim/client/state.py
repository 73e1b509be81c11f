"""This device's crypto state and its store: the crypto machine, saving what changed in one transaction,
and the numbering of sends that lets the server catch a stale copy of a profile (docs/protocol.md,
"Forked profiles")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from tokenim.client.stores import Records, Store
from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.machine import CryptoMachine
from tokenim.crypto.persist import export_changes, load_records

T = TypeVar("T")
# Send numbers in flight at once stay closer together than this, so none arrives further below the
# highest one than the server remembers (62 numbers; docs/protocol.md, "Forked profiles").
SEND_WINDOW = 32
FORKED_MESSAGE = (
    "This profile is an out-of-date copy of device {device} (copied or restored from a backup): another copy "
    "has sent messages since. It can still read, but it will not send, so that no encryption key is used twice: "
    "send from the up-to-date copy."
)


class DeviceState:
    """The device's identity, its crypto machine loaded from `store`, and the clock; shared by every noun."""

    def __init__(self, store: Store, identity: DeviceIdentity, clock: Clock) -> None:
        self.store = store
        self.identity = identity
        self.clock = clock
        self.machine = CryptoMachine(identity)
        load_records(self.machine, store.all_records(), store.pickle_key)
        self._in_flight: set[int] = set()
        self._window = asyncio.Condition()
        self._rotate_if_copied()

    @property
    def user_id(self) -> str:
        return self.identity.user_id

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    def full_user_id(self, user: str) -> str:
        """`bob` or `@bob` means @bob on this server."""
        name = user.lstrip("@")
        return user if ":" in user else f"@{name}:{self.store.get_meta('server_name')}"

    def persist(
        self,
        *,
        send_seq: int | None = None,
        records: Records | None = None,
        meta: dict[str, str] | None = None,
        secrets: dict[str, bytes | None] | None = None,
    ) -> None:
        """Write what changed in the crypto state (sessions, keys, seen indexes, the account) with the send number
        about to be used and any other `records`, `meta` and `secrets`, in one durable transaction."""
        changes = export_changes(self.machine, self.store.pickle_key)
        for kind, items in (records or {}).items():
            changes.setdefault(kind, {}).update(items)
        secrets = dict(secrets or {})
        if self.machine.olm.account_dirty:
            self.machine.olm.account_dirty = False
            secrets["olm_account"] = self.identity.pickle_account(self.store.pickle_key).encode()
        meta = dict(meta or {})
        if send_seq is not None:
            meta["send_seq"] = str(send_seq)
        self.store.save(secrets=secrets, records=changes, meta=meta)

    def save_identity(self, *, master: bool = False) -> None:
        """Save the Olm account (after making or publishing one-time keys), and with `master` the master key."""
        secrets: dict[str, bytes | None] = {"olm_account": self.identity.pickle_account(self.store.pickle_key).encode()}
        if master:
            secrets["master_seed"] = self.identity.master.seed()
        self.store.set_secrets(secrets)

    # ---- forked profiles ---------------------------------------------------------------------

    def _rotate_if_copied(self) -> None:
        """A profile that is not where it was last opened may be a copy (or a restored backup) of one that
        lives on: its outbound sessions may be used by the other copy too, so none of them is used again."""
        here, before = self.store.location(), self.store.get_meta("location")
        if here == before:
            return
        if before is not None:
            self.machine.rooms.discard_outbound("copied")
        self.persist(meta={"location": here})

    def next_send_seq(self) -> int:
        """The number for the next send of this device; refused at once if this copy is known to be stale."""
        if self.store.get_meta("forked"):
            raise TokenIMError(ErrorCode.PROFILE_FORKED, FORKED_MESSAGE.format(device=self.device_id))
        return int(self.store.get_meta("send_seq") or 0) + 1

    def _window_has_room(self) -> bool:
        return not self._in_flight or self.next_send_seq() - min(self._in_flight) < SEND_WINDOW

    @contextlib.asynccontextmanager
    async def numbered_send(self) -> AsyncIterator[int]:
        """Take the next send number and save it with the crypto state (before anything leaves), then hold it
        while the request is in flight. Waits while the oldest number in flight is SEND_WINDOW behind."""
        async with self._window:
            await self._window.wait_for(self._window_has_room)
            seq = self.next_send_seq()
            self.persist(send_seq=seq)
            self._in_flight.add(seq)
        try:
            yield seq
        finally:
            self._in_flight.discard(seq)
            async with self._window:
                self._window.notify_all()

    async def sending(self, request: Awaitable[T]) -> T:
        """A numbered send to the server; a `profile_forked` refusal marks this copy stale before it is raised."""
        try:
            return await request
        except TokenIMError as err:
            if err.code is ErrorCode.PROFILE_FORKED:
                raise self.profile_forked() from None
            raise

    def profile_forked(self) -> TokenIMError:
        """The server refused a send number already used: this copy is stale. It stops sending for good, and
        drops its outbound sessions (the other copy holds them too)."""
        self.machine.rooms.discard_outbound("forked")
        self.persist(meta={"forked": "1"})
        return TokenIMError(ErrorCode.PROFILE_FORKED, FORKED_MESSAGE.format(device=self.device_id))


__all__ = ["SEND_WINDOW", "DeviceState"]
