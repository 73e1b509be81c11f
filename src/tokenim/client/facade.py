"""`Client`: one device of one user, with one attribute per noun.

    async with await Client.open(profile_dir, passphrase, clock=SystemClock()) as client:
        room = await client.rooms.resolve("@bob", create=True)
        await client.messages.send_text(room, "hello")

Each noun lives in its own module (rooms.py, messages.py, devices.py, keys.py, files.py, admin.py,
account.py, backup.py, verification.py, link.py, key_files.py, audit.py, security.py); they share the device's state
(state.py: store, identity, crypto machine) and one transport
(transport.py: httpx, tokens, refresh, errors). The store is the passphrase profile on disk or, for bots
and tests, a `MemoryStore`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Self

import httpx

from tokenim.client.account import Account, open_device, register
from tokenim.client.admin import Admin
from tokenim.client.audit import Audit
from tokenim.client.backup import Backup
from tokenim.client.devices import Devices
from tokenim.client.files import Files
from tokenim.client.key_files import KeyFiles
from tokenim.client.key_import import register_by_master_key
from tokenim.client.keys import Keys
from tokenim.client.link import Linking, LinkInvitation, link_new_device
from tokenim.client.messages import Messages
from tokenim.client.rooms import Rooms
from tokenim.client.security import Security
from tokenim.client.state import DeviceState
from tokenim.client.store import KdfParams
from tokenim.client.stores import Store
from tokenim.client.transport import CodeSource, Transport
from tokenim.client.two_factor import TwoFactor
from tokenim.client.verification import Verification
from tokenim.core.clock import Clock


class Client:
    """A device that chats: every message is encrypted here and decrypted here. Make one with `register`
    or `open`; close it (or use `async with`) when done."""

    account: Account
    admin: Admin
    audit: Audit
    backup: Backup
    devices: Devices
    files: Files
    keys: Keys
    key_files: KeyFiles
    linking: Linking
    messages: Messages
    rooms: Rooms
    security: Security
    two_factor: TwoFactor
    verification: Verification

    def __init__(self, state: DeviceState, transport: Transport) -> None:
        self._state = state
        self._transport = transport
        self.keys = Keys(state, transport, on_trust_changed=lambda: self.rooms.forget_devices())
        self.rooms = Rooms(state, transport, self.keys)
        self.backup = Backup(state, transport)
        self.messages = Messages(state, transport, self.keys, self.rooms, after_new_keys=self.backup.upload_quietly)
        self.files = Files(state, transport, self.messages)
        self.devices = Devices(state, transport, self.keys)
        self.account = Account(state, transport, self.keys)
        self.admin = Admin(transport)
        self.audit = Audit(transport)
        self.security = Security(transport)
        self.key_files = KeyFiles(state, self.audit, self.keys)
        self.linking = Linking(state, transport, self.keys)
        self.verification = Verification(state, transport, self.keys, self.messages, self.audit)
        self.two_factor = TwoFactor(transport)

    @classmethod
    async def register(
        cls,
        profile: Path | Store,
        passphrase: str | None = None,
        *,
        server_url: str,
        username: str,
        clock: Clock,
        email: str | None = None,
        invite: str | None = None,
        kdf: KdfParams | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Self:
        """Make the user's master key and this device's keys here, register them, then log in.

        `profile`: a directory for a new passphrase profile, or an empty store (e.g. `MemoryStore()`).
        If the server refuses, a new profile directory is removed again so the command can simply be retried.
        """
        state, conn = await register(
            profile,
            passphrase,
            server_url=server_url,
            username=username,
            clock=clock,
            email=email,
            invite=invite,
            kdf=kdf,
            transport=transport,
        )
        client = cls(state, conn)
        try:
            await client.account.login()
        except BaseException:
            await client.close()
            raise
        return client

    @classmethod
    async def import_master_key(
        cls,
        profile: Path | Store,
        passphrase: str | None = None,
        *,
        key_file: bytes,
        key_passphrase: str,
        server_url: str,
        username: str,
        clock: Clock,
        kdf: KdfParams | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        otp: str | CodeSource | None = None,
    ) -> Self:
        """A new device of an existing user, signed by the master key exported to `key_file` (PKCS#8 PEM).

        Checks the file, its passphrase and that the key is the user's current master key before anything
        is made; if the server refuses the device, a new profile directory is removed again. With two-factor
        authentication on, the addition needs a code: `otp` (a code, or where to ask for one, as
        `two_factor.use_codes` takes)."""
        state, conn = await register_by_master_key(
            profile,
            passphrase,
            key_file=key_file,
            key_passphrase=key_passphrase,
            server_url=server_url,
            username=username,
            clock=clock,
            kdf=kdf,
            transport=transport,
            otp=otp,
        )
        client = cls(state, conn)
        client.two_factor.use_codes(otp)
        try:
            await client.keys.replenish()
        except BaseException:
            await client.close()
            raise
        return client

    @classmethod
    async def link(
        cls,
        profile: Path | Store,
        passphrase: str | None = None,
        *,
        server_url: str,
        username: str,
        clock: Clock,
        on_code: Callable[[LinkInvitation], None],
        kdf: KdfParams | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        poll_interval: float = 1.0,
    ) -> Self:
        """Make this device's keys here and have a device of `username` that holds the master key approve them:
        `on_code` gets the one-time code to type there (`client.linking.approve(code)`). Returns once this device
        holds its keys, the master key (unless the server's policy says signature only) and the room keys, and
        is logged in. Any failure leaves no profile behind and tells the other device."""
        pending = await link_new_device(
            profile,
            passphrase,
            server_url=server_url,
            username=username,
            clock=clock,
            on_code=on_code,
            kdf=kdf,
            transport=transport,
            poll_interval=poll_interval,
        )
        client = cls(pending.state, pending.transport)
        try:
            await client.account.login()
            await pending.confirm(client.keys)
        except BaseException as exc:
            await pending.abort(exc)
            raise pending.error(exc) from None
        return client

    @classmethod
    async def open(
        cls,
        profile: Path | Store,
        passphrase: str | None = None,
        *,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Self:
        """Unlock a profile directory (with its passphrase) or a store made by `register`."""
        return cls(*open_device(profile, passphrase, clock=clock, transport=transport))

    async def close(self) -> None:
        """Close the connection to the server and release the store."""
        try:
            await self._transport.close()
        finally:
            self._state.store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def user_id(self) -> str:
        """This user, `@name:server`."""
        return self._state.user_id

    @property
    def device_id(self) -> str:
        """This device's id."""
        return self._state.device_id

    @property
    def server_name(self) -> str:
        """The name of the server this account lives on."""
        return self._state.store.get_meta("server_name") or ""

    def full_user_id(self, user: str) -> str:
        """`bob` or `@bob` means @bob on this server; `@bob:other` stays as it is."""
        return self._state.full_user_id(user)


__all__ = ["Client"]
