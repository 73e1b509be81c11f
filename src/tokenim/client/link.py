"""Linking a new device without files: the new device shows a one-time code, a device holding the master key
approves it (`client.linking.approve(code)`), and secrets travel over a channel bound to that code
(crypto/link.py). The server only relays. docs/protocol.md, "Linking a new device", lists the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import vodozemac

from tokenim.client.account import _check_empty, _need, _remove_profile
from tokenim.client.keys import Keys
from tokenim.client.state import DeviceState
from tokenim.client.store import KdfParams, ProfileStore
from tokenim.client.stores import Store
from tokenim.client.transport import Transport, call
from tokenim.core.clock import Clock
from tokenim.core.encoding import b64decode, b64encode
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import UserId, make_user_id, new_device_id
from tokenim.core.signing import PublicMasterKey, SigningKey, sign_json
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.link import (
    PAKE_SEQ,
    Bound,
    LinkChannel,
    LinkCode,
    LinkError,
    check_new_device,
    device_signed_keys,
    export_room_keys,
    failure,
    import_room_keys,
    relayed_failure,
)
from tokenim.crypto.trust import Pin
from tokenim.protocol.api import DevicesResponse, HealthResponse, OkResponse
from tokenim.protocol.keys import MasterKey, parse_device_keys, parse_master_key, verify_device_keys, verify_master_key
from tokenim.protocol.link import (
    LINK_TTL_MS,
    LinkClaimResponse,
    LinkFailure,
    LinkMessagesResponse,
    LinkOpenResponse,
    LinkPolicy,
    LinkSide,
)

ROOM_KEYS_PER_MESSAGE = 200
# The new device's messages: 1 SPAKE2, 2 its keys and confirmation, 3 done. The approver's: 1 SPAKE2, 2 the master
# key object, 3 its confirmation, 4 the secrets, 5… the room keys in parts.
NEW_KEYS, NEW_DONE = 2, 3
APPROVER_MASTER, APPROVER_CONFIRM, APPROVER_SECRETS = 2, 3, 4
T_MASTER, T_DEVICE, T_CONFIRM = "tokenim.link.master", "tokenim.link.device", "tokenim.link.confirm"
T_SECRETS, T_ROOM_KEYS, T_DONE = "tokenim.link.secrets", "tokenim.link.room_keys", "tokenim.link.done"


@dataclass(frozen=True, slots=True)
class LinkApproval:
    """What `approve` did: the device it added, whether it handed over the master key, how many room keys."""

    device_id: str
    master_key_sent: bool
    room_keys: int


@dataclass(frozen=True, slots=True)
class LinkInvitation:
    """What the new device shows while it waits: the code to type on the approving device, and until when."""

    code: str
    user_id: str
    expires_at: int


class _Mailbox:
    """One side's view of a slot: post numbered messages, wait for the other side's, end the slot."""

    def __init__(self, link_id: str, poll_interval: float, *, http: httpx.AsyncClient | None = None, token: str = "",
                 transport: Transport | None = None) -> None:  # fmt: skip
        self._path = f"/v1/link/{link_id}"
        self._poll = poll_interval
        self._http, self._token, self._transport = http, token, transport
        self._inbox: dict[int, bytes] = {}
        self._after = 0

    async def _ask(self, method: str, path: str, model: type[Any], body: dict[str, Any] | None = None) -> Any:
        if self._transport is not None:
            return await self._transport.request(method, self._path + path, model, body=body)
        assert self._http is not None
        return await call(self._http, method, self._path + path, model, body=body, token=self._token)

    async def put(self, seq: int, data: bytes) -> None:
        await self._ask("PUT", f"/messages/{seq}", OkResponse, {"body": b64encode(data)})

    async def take(self, seq: int) -> bytes:
        """The other side's message `seq`, polling until it arrives (the server ends the wait when the code expires)."""
        while seq not in self._inbox:
            page: LinkMessagesResponse = await self._ask("GET", f"/messages?after={self._after}", LinkMessagesResponse)
            if page.state == "approved":
                raise LinkError(LinkFailure.TAMPERED, "The server says the link ended while messages were missing.")
            for m in page.messages:
                try:
                    self._inbox[m.seq] = b64decode(m.body)
                except ValueError:
                    raise LinkError(LinkFailure.TAMPERED, "The server relayed a message that is not base64.") from None
                self._after = max(self._after, m.seq)
            if seq not in self._inbox:
                await asyncio.sleep(self._poll)
        return self._inbox[seq]

    async def wait_approved(self) -> None:
        """Wait until the approving device reports the link approved (a failure arrives as link_failed)."""
        # Polling by design: the server offers no push for a device that has no account session yet.
        while (await self._ask("GET", f"/messages?after={self._after}", LinkMessagesResponse)).state != "approved":  # noqa: ASYNC110
            await asyncio.sleep(self._poll)

    async def approved(self) -> None:
        await self._ask("POST", "/close", OkResponse, {"outcome": "approved"})

    async def fail(self, reason: LinkFailure) -> None:
        """Tell the other side (through the server) why this side gave up; best effort."""
        with contextlib.suppress(TokenIMError):
            await self._ask("POST", "/close", OkResponse, {"outcome": "failed", "reason": reason.value})


def _expect(message: dict[str, Any], kind: str) -> dict[str, Any]:
    if message.get("type") != kind:
        raise LinkError(LinkFailure.TAMPERED, f"Expected a {kind} message, got something else.")
    return message


# ---- the approving device ------------------------------------------------------------------------


class Linking:
    """`client.linking`: approve a new device of this account from the code it shows."""

    def __init__(self, state: DeviceState, transport: Transport, keys: Keys) -> None:
        self._state = state
        self._transport = transport
        self._keys = keys

    async def approve(self, code: str, *, poll_interval: float = 1.0) -> LinkApproval:
        """Check the new device's keys, sign them with the master key, add the device, then send it the master key
        (or, by server policy, nothing more) and this device's room keys over the channel bound to `code`."""
        parsed = LinkCode.parse(code)
        identity = self._state.identity
        if not identity.master.holds_private:
            identity.master.sign(b"")  # raises the sentence: this device can't sign for the account
        own = await self._keys.require_current_master("approve a new device (it would sign it with the old, rotated key)")
        claim = await self._transport.request("POST", f"/v1/link/{parsed.link_id}/claim", LinkClaimResponse)
        box = _Mailbox(parsed.link_id, poll_interval, transport=self._transport)
        added: list[str] = []
        try:
            async with asyncio.timeout(LINK_TTL_MS / 1000 + 60):
                channel = LinkChannel(LinkSide.APPROVER, parsed, identity.user_id)
                return await self._run(channel, box, claim, added, own.revoked)
        except LinkError as exc:
            await box.fail(exc.reason)
            await self._undo(added)
            raise failure(exc.reason, approver=True, found=exc.message) from None
        except TimeoutError:
            await box.fail(LinkFailure.ERROR)
            await self._undo(added)
            raise TokenIMError(ErrorCode.LINK_EXPIRED, "The new device did not answer in time: start again.") from None
        except BaseException as exc:
            if isinstance(exc, TokenIMError) and exc.code is ErrorCode.LINK_FAILED:
                await self._undo(added)
                raise relayed_failure(exc, approver=True) from None
            await box.fail(LinkFailure.ERROR if isinstance(exc, Exception) else LinkFailure.CANCELLED)
            await self._undo(added)
            raise

    async def _undo(self, added: list[str] | None) -> None:
        """A device added for a link that then failed is removed again: nobody holds its keys any more."""
        for device_id in added or []:
            with contextlib.suppress(TokenIMError):
                await self._transport.request("DELETE", f"/v1/devices/{device_id}", OkResponse)

    async def _run(
        self, channel: LinkChannel, box: _Mailbox, claim: LinkClaimResponse, added: list[str], revoked: frozenset[str]
    ) -> LinkApproval:
        identity = self._state.identity
        await box.put(PAKE_SEQ, channel.pake_message)
        channel.receive_pake(await box.take(PAKE_SEQ))
        master = identity.master_key_object()
        await box.put(APPROVER_MASTER, channel.seal(APPROVER_MASTER, {"type": T_MASTER, "master_key": master}))
        hello = _expect(channel.open(NEW_KEYS, await box.take(NEW_KEYS)), T_DEVICE)
        bound = Bound(master, hello.get("device_keys"))  # type: ignore[arg-type]
        channel.check_confirmation(bound, hello.get("confirm"))
        device = check_new_device(hello.get("device_keys"), identity.user_id, identity.master_version)
        await self._check_device_is_new(device.device_id, [device.ed25519, device.curve25519], revoked)
        await box.put(
            APPROVER_CONFIRM, channel.seal(APPROVER_CONFIRM, {"type": T_CONFIRM, "confirm": channel.confirmation(bound)})
        )
        signed = sign_json(device.raw, identity.user_id, identity.master.public_key, identity.master)
        body = {"device_keys": signed, "one_time_keys": hello.get("one_time_keys") or {}}
        body["fallback_keys"] = hello.get("fallback_keys") or {}
        await self._transport.post("/v1/devices", body, OkResponse)
        added.append(device.device_id)
        send_master = claim.policy == LinkPolicy.MASTER_KEY.value
        room_keys = export_room_keys(self._state.machine.rooms)
        parts = [room_keys[i : i + ROOM_KEYS_PER_MESSAGE] for i in range(0, len(room_keys), ROOM_KEYS_PER_MESSAGE)]
        secrets = {
            "type": T_SECRETS,
            "device_keys": signed,
            "master_seed": b64encode(identity.master.seed()) if send_master else None,
            "pins": {
                user_id: {"master_key": pin.master_key, "version": pin.version, "followed": list(pin.followed)}
                for user_id, pin in sorted(self._state.machine.pins.items())
            },
            "room_key_parts": len(parts),
        }
        await box.put(APPROVER_SECRETS, channel.seal(APPROVER_SECRETS, secrets))
        for i, part in enumerate(parts, start=APPROVER_SECRETS + 1):
            await box.put(i, channel.seal(i, {"type": T_ROOM_KEYS, "room_keys": part}))
        _expect(channel.open(NEW_DONE, await box.take(NEW_DONE)), T_DONE)
        await box.approved()
        return LinkApproval(device.device_id, send_master, len(room_keys))

    async def _check_device_is_new(self, device_id: str, keys: list[str], revoked: frozenset[str]) -> None:
        """The device id is not one of this account's devices, and neither it nor its keys were ever revoked (as
        the trust decision on this user's keys, made when the approval began, found in verified revocations)."""
        current = await self._transport.get("/v1/devices", DevicesResponse)
        if any(d.device_id == device_id for d in current.devices):
            raise LinkError(LinkFailure.REFUSED, f"Your account already has a device {device_id}.")
        me = self._state.user_id
        if device_id in revoked or any(self._state.machine.is_revoked(me, k) for k in keys):
            raise LinkError(LinkFailure.REFUSED, f"Device {device_id} (or its keys) was revoked: it can't be added.")


# ---- the new device ------------------------------------------------------------------------------


@dataclass
class PendingLink:
    """A new device whose profile is written but not yet confirmed: the façade logs it in, checks what the server
    serves against what the approving device said (`confirm`), or undoes everything (`abort`)."""

    state: DeviceState
    transport: Transport
    profile: Path | Store
    channel: LinkChannel
    box: _Mailbox
    master_key: str
    device_ed25519: str

    async def confirm(self, keys: Keys) -> None:
        """The server must serve the master key the approving device sent and this device as it signed it; then
        the approving device is told the link is done."""
        me = self.state.identity
        users = await keys.query([me.user_id])
        mine = users.get(me.user_id)
        device = mine.devices.get(me.device_id) if mine else None
        if mine is None or mine.master.public_key != self.master_key or device is None or device.ed25519 != self.device_ed25519:
            raise LinkError(LinkFailure.TAMPERED, "The server shows other keys than the approving device sent.")
        await self.box.put(NEW_DONE, self.channel.seal(NEW_DONE, {"type": T_DONE}))
        async with asyncio.timeout(LINK_TTL_MS / 1000 + 60):
            await self.box.wait_approved()

    def error(self, exc: BaseException) -> BaseException:
        """What the façade raises after `abort`: a channel finding as its link_failed error, anything else as is."""
        if isinstance(exc, TokenIMError):
            return relayed_failure(exc, approver=False)
        return failure(exc.reason) if isinstance(exc, LinkError) else exc

    async def abort(self, exc: BaseException) -> None:
        """Tell the approving device, and leave no profile behind."""
        reason = exc.reason if isinstance(exc, LinkError) else LinkFailure.ERROR
        if not isinstance(exc, Exception):
            reason = LinkFailure.CANCELLED
        await self.box.fail(reason)
        with contextlib.suppress(Exception):
            await self.transport.close()
        self.state.store.close()
        if isinstance(self.profile, Path):
            _remove_profile(self.profile)


async def link_new_device(
    profile: Path | Store,
    passphrase: str | None,
    *,
    server_url: str,
    username: str,
    clock: Clock,
    on_code: Callable[[LinkInvitation], None],
    kdf: KdfParams | None,
    transport: httpx.AsyncBaseTransport | None,
    poll_interval: float,
) -> PendingLink:
    """Open a slot, show the code (`on_code`), wait for an approving device, and write the profile only once
    everything it sent checks out. Any failure before that leaves nothing behind and tells the other side."""
    _check_empty(profile)
    if isinstance(profile, Path):
        _need(passphrase)
    http = httpx.AsyncClient(base_url=server_url.rstrip("/"), transport=transport, timeout=30.0)
    box: _Mailbox | None = None
    try:
        health = await call(http, "GET", "/health", HealthResponse)
        user_id = make_user_id(username, health.server_name)
        opened = await call(http, "POST", "/v1/link", LinkOpenResponse, body={"user_id": user_id})
        code = LinkCode.new(opened.link_id)
        channel = LinkChannel(LinkSide.NEW, code, user_id)
        box = _Mailbox(opened.link_id, poll_interval, http=http, token=opened.token)
        await box.put(PAKE_SEQ, channel.pake_message)
        on_code(LinkInvitation(str(code), user_id, opened.expires_at))
        async with asyncio.timeout(LINK_TTL_MS / 1000 + 60):
            received = await _receive(channel, box, user_id, clock)
        store = ProfileStore.create(profile, _need(passphrase), kdf) if isinstance(profile, Path) else profile
    except LinkError as exc:
        if box is not None:
            await box.fail(exc.reason)
        await http.aclose()
        raise failure(exc.reason) from None
    except TimeoutError:
        await http.aclose()
        raise TokenIMError(ErrorCode.LINK_EXPIRED, "No device approved this one in time: start again.") from None
    except BaseException as exc:
        if isinstance(exc, TokenIMError) and exc.code is ErrorCode.LINK_FAILED:
            await http.aclose()
            raise relayed_failure(exc, approver=False) from None
        if box is not None:
            await box.fail(LinkFailure.CANCELLED if not isinstance(exc, Exception) else LinkFailure.ERROR)
        await http.aclose()
        raise
    try:
        state = _write_profile(store, received, server_url, health.server_name, clock)
    except BaseException as exc:  # a profile that could not be written whole is not left behind, and the other side is told
        await box.fail(LinkFailure.CANCELLED if not isinstance(exc, Exception) else LinkFailure.ERROR)
        await http.aclose()
        store.close()
        if isinstance(profile, Path):
            _remove_profile(profile)
        raise
    return PendingLink(state, Transport(http, store), profile, channel, box, received.master.public_key, state.identity.ed25519)


@dataclass
class _Received:
    identity: DeviceIdentity
    master: MasterKey
    device_created_at: int
    pins: dict[str, Pin]
    room_keys: list[Any]


async def _receive(channel: LinkChannel, box: _Mailbox, user_id: str, clock: Clock) -> _Received:
    """The new device's side of the exchange, up to the secrets and room keys (nothing written yet)."""
    channel.receive_pake(await box.take(PAKE_SEQ))
    master_raw = _expect(channel.open(APPROVER_MASTER, await box.take(APPROVER_MASTER)), T_MASTER).get("master_key")
    try:
        master = parse_master_key(master_raw)
        verify_master_key(master)
    except TokenIMError:
        raise LinkError(LinkFailure.TAMPERED, "The approving device sent a master key that does not verify.") from None
    if master.user_id != user_id:
        raise LinkError(LinkFailure.TAMPERED, "The approving device sent another user's master key.")
    now = clock.now_ms()
    identity = DeviceIdentity(
        UserId(user_id), new_device_id(), vodozemac.Account(), PublicMasterKey(master.public_key), master.version,
        master.created_at,
    )  # fmt: skip
    device_keys = device_signed_keys(identity, now)
    upload = identity.keys_to_upload(0, need_fallback=True)
    bound = Bound(master.raw, device_keys)
    hello = {"type": T_DEVICE, "device_keys": device_keys, "confirm": channel.confirmation(bound)}
    hello |= {"one_time_keys": upload.one_time_keys, "fallback_keys": upload.fallback_keys}
    await box.put(NEW_KEYS, channel.seal(NEW_KEYS, hello))
    confirm = _expect(channel.open(APPROVER_CONFIRM, await box.take(APPROVER_CONFIRM)), T_CONFIRM)
    channel.check_confirmation(bound, confirm.get("confirm"))
    secrets = _expect(channel.open(APPROVER_SECRETS, await box.take(APPROVER_SECRETS)), T_SECRETS)
    _check_signed_device(secrets.get("device_keys"), device_keys, master)
    seed = secrets.get("master_seed")
    if seed is not None:
        identity.master = _master_from_seed(seed, master.public_key)
    parts = secrets.get("room_key_parts")
    if not isinstance(parts, int) or not 0 <= parts <= 60:
        raise LinkError(LinkFailure.TAMPERED, "The approving device announced an impossible number of room key parts.")
    room_keys: list[Any] = []
    for seq in range(APPROVER_SECRETS + 1, APPROVER_SECRETS + 1 + parts):
        part = _expect(channel.open(seq, await box.take(seq)), T_ROOM_KEYS).get("room_keys")
        room_keys.extend(part if isinstance(part, list) else [])
    identity.mark_keys_as_published()
    clean_pins = _pins(secrets.get("pins"), now)
    return _Received(identity, master, now, clean_pins, room_keys)


def _check_signed_device(raw: object, sent: dict[str, Any], master: MasterKey) -> None:
    """The approving device must return exactly the object this device signed, with a valid master signature."""
    try:
        dk = parse_device_keys(raw)
        verify_device_keys(dk, master)
    except TokenIMError:
        raise LinkError(LinkFailure.TAMPERED, "The approving device's signature on this device does not verify.") from None
    if {k: v for k, v in dk.raw.items() if k != "signatures"} != {k: v for k, v in sent.items() if k != "signatures"}:
        raise LinkError(LinkFailure.TAMPERED, "The approving device signed other keys than this device's.")


def _master_from_seed(seed: object, public_key: str) -> SigningKey:
    try:
        key = SigningKey.from_seed(b64decode(str(seed)))
    except ValueError:
        raise LinkError(LinkFailure.TAMPERED, "The master key sent is not a key.") from None
    if key.public_key != public_key:
        raise LinkError(LinkFailure.TAMPERED, "The master key sent does not match the account's master key.")
    return key


def _pins(raw: object, now: int) -> dict[str, Pin]:
    """The approving device's pins (master key, version, keys followed), as far as they are well formed: they
    come from the user's own device over the confirmed channel, and a malformed one is simply not taken."""
    pins: dict[str, Pin] = {}
    for user_id, d in raw.items() if isinstance(raw, dict) else ():
        if not isinstance(d, dict):
            continue
        key, version, followed = d.get("master_key"), d.get("version"), d.get("followed")
        if not (isinstance(key, str) and isinstance(version, int) and not isinstance(version, bool) and version >= 1):
            continue
        if not (isinstance(followed, list) and followed and all(isinstance(k, str) for k in followed) and followed[-1] == key):
            continue
        pins[str(user_id)] = Pin(str(user_id), key, version, now, tuple(followed))
    return pins


def _write_profile(store: Store, got: _Received, server_url: str, server_name: str, clock: Clock) -> DeviceState:
    """Everything checked out: write the profile (identity, pins, room keys)."""
    identity = got.identity
    meta = {"server_url": server_url, "server_name": server_name, "user_id": identity.user_id}
    meta |= {"device_id": identity.device_id, "master_key_version": str(identity.master_version)}
    meta |= {"master_created_at": str(identity.master_created_at), "device_created_at": str(got.device_created_at)}
    if not identity.master.holds_private:
        meta["master_public"] = identity.master.public_key
    store.set_meta(meta)
    state = DeviceState(store, identity, clock)
    state.save_identity(master=identity.master.holds_private)
    for user_id, pin in got.pins.items():
        if user_id != identity.user_id:
            state.machine.pins[user_id] = pin
            state.machine.dirty_pins.add(user_id)
    import_room_keys(state.machine.rooms, got.room_keys)
    state.persist()
    return state


__all__ = ["LinkApproval", "LinkInvitation", "Linking", "PendingLink", "link_new_device"]
