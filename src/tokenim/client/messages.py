"""`client.messages`: end-to-end encrypted sending, sync, history and listening.

Every message is encrypted here and decrypted here. What to send next for a room key comes from the
crypto machine (crypto/outgoing.py); this module carries it and saves the state once per operation."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import websockets

from tokenim.client.contacts import ExcludedDevice, SendResult, rotation_line
from tokenim.client.keys import Keys
from tokenim.client.rooms import Rooms
from tokenim.client.state import DeviceState
from tokenim.client.stores import Records
from tokenim.client.transport import Transport
from tokenim.client.verification import status_of
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_user_id
from tokenim.core.limits import ONE_TIME_KEY_TARGET
from tokenim.crypto.machine import RejectedMessage, RoomMessage
from tokenim.crypto.olm import CryptoError
from tokenim.crypto.outgoing import KeysClaim
from tokenim.crypto.verified import VerificationStatus
from tokenim.protocol.api import HistoryResponse, KeysClaimResponse, OkResponse, SendResponse, SyncResponse
from tokenim.protocol.events import DEVICE_LIST, ENCRYPTED, MAX_CONTENT_BYTES, MEMBER

SEND_RETRIES = 3
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0
NOT_FILE = "not_file"  # record kind: ids of messages received that carry no file
KEY_EVENT = "key_event"  # record kind: the line shown for a key rotation event, as decided when first seen
ROTATED = "rotated"
KEY_FILE_WHY = "its room key came from a key file or backup, which can't vouch for who sent it"
FILE = "file"  # record kind: the description (key, hash, name) of each file message received


@dataclass(frozen=True, slots=True)
class Message:
    """A message as `tokenim read` shows it; `warning` is set (and `body` empty) when it was rejected."""

    id: str
    room: str
    sender: str
    sender_device: str | None
    body: str | None
    ts: int
    verified: bool
    file: dict[str, Any] | None = None
    warning: str | None = None
    # Not a message but a room event worth a line: "key_rotated" (a member's master key rotation), with `notice`
    # when this device followed the signed rotation, else `warning`.
    event: str | None = None
    notice: str | None = None
    verified_by: str | None = None  # "sas" | "safety_number": the sender is verified by you (client/verification.py)
    why_not: str | None = None  # why the sender is not verified by you; None for your own messages and warnings

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for optional in ("file", "warning", "event", "notice"):
            if out[optional] is None:
                del out[optional]
        return out


_FILE_FIELDS = {"algorithm": str, "blob_id": str, "key": str, "sha256": str, "name": str, "size": int, "mimetype": str}


def _to_message(result: RoomMessage | RejectedMessage) -> Message:
    if isinstance(result, RejectedMessage):
        return Message(result.event_id, result.room_id, result.sender, None, None, result.ts, False, warning=result.warning)
    body = result.content.get("body")
    file_info = result.content.get("file") if result.content.get("type") == "m.file" else None
    if file_info is not None and (
        not isinstance(file_info, dict) or any(not isinstance(file_info.get(k), t) for k, t in _FILE_FIELDS.items())
    ):
        warning = "This file message is malformed and was not shown."
        return Message(
            result.event_id, result.room_id, result.sender, result.sender_device, None, result.ts, False, warning=warning
        )
    return Message(
        result.event_id,
        result.room_id,
        result.sender,
        result.sender_device,
        body if isinstance(body, str) else None,
        result.ts,
        result.verified,
        file=file_info if isinstance(file_info, dict) else None,
    )


def _rotation(event: dict[str, Any]) -> bool:
    """A `tokenim.device_list` event announcing a master key rotation, well formed enough to show."""
    content = event.get("content")
    if event.get("type") != DEVICE_LIST or not isinstance(content, dict) or content.get("change") != ROTATED:
        return False
    try:
        check_user_id(content.get("user_id"))  # it is asked about in keys/query: a malformed one must not stop sync
    except TokenIMError:
        return False
    return True


class Messages:
    """`client.messages`: send, sync, read history and listen, all end-to-end encrypted."""

    def __init__(
        self,
        state: DeviceState,
        transport: Transport,
        keys: Keys,
        rooms: Rooms,
        *,
        after_new_keys: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._state = state
        # Called after an operation that may have brought room keys (a send, received room keys): the key
        # backup uploads them. It never raises, so a send or read never fails because of it.
        self._after_new_keys = after_new_keys
        self._machine = state.machine
        self._transport = transport
        self._keys = keys
        self._rooms = rooms
        self._listen_synced = False

    # ---- sending ------------------------------------------------------------------------------

    async def share_room_key(self, room_id: str) -> list[ExcludedDevice]:
        """Rotate if a rule says so, and give the current room key to member devices that lack it.

        Returns the member devices left out: not trusted, or no Olm session could be made with them."""
        excluded = await self._share_room_key(room_id)
        self._state.persist()
        return excluded

    async def _share_room_key(self, room_id: str) -> list[ExcludedDevice]:
        """The machine says what to send; this carries it. Saved here only when something leaves the device."""
        devices, excluded = await self._rooms.recipients(room_id)
        outgoing = self._machine.share_room_key(room_id, devices, self._state.clock.now_ms())
        while outgoing:
            request = outgoing.pop(0)
            if isinstance(request, KeysClaim):
                claimed = await self._transport.post("/v1/keys/claim", request.body(), KeysClaimResponse)
                outgoing.extend(self._machine.receive_claim(request, claimed))
            else:
                async with self._state.numbered_send() as seq:  # the advanced Olm ratchets are saved with the number
                    await self._state.sending(self._transport.post("/v1/to_device", request.body(seq), OkResponse))
                self._machine.mark_sent(request)
        return excluded + [
            ExcludedDevice(
                user_id=d.user_id,
                device_id=d.device_id,
                reason="no_session",
                message=f"no encrypted channel to device {d.device_id} of {d.user_id}: the server had no valid "
                "one-time key for it (it gets the key with a later message once it has uploaded new ones).",
            )
            for d in self._machine.without_room_key(room_id, devices)
        ]

    async def send_content(self, room_id: str, plaintext: dict[str, Any]) -> SendResult:
        """Encrypt and send; retried with the same transaction id so a lost answer never duplicates.

        The result names every member device left out of the message, and why."""
        self._state.next_send_seq()  # a stale copy stops before it encrypts anything
        excluded = await self._share_room_key(room_id)  # saved below, with the message's ratchet advance
        self._check_fits(room_id, plaintext)
        content = self._machine.encrypt_room_message(room_id, plaintext)
        # The number and the advanced ratchet are saved before the ciphertext leaves: neither is used twice.
        async with self._state.numbered_send() as seq:
            txn_id = secrets.token_urlsafe(12)
            body = {"type": ENCRYPTED, "content": content, "device_seq": seq}
            for attempt in range(SEND_RETRIES):
                try:
                    put = self._transport.request("PUT", f"/v1/rooms/{room_id}/send/{txn_id}", SendResponse, body=body)
                    sent = await self._state.sending(put)
                    break
                except TokenIMError as err:
                    if err.code is not ErrorCode.SERVER_UNREACHABLE or attempt == SEND_RETRIES - 1:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
        await self._new_keys()
        return SendResult(event_id=sent.event_id, pos=sent.pos, seq=sent.seq, excluded=excluded)

    async def send_text(self, room_id: str, text: str) -> SendResult:
        """Send a text message; an empty one, or one too big to fit once encrypted, is refused before sending."""
        if not text.strip():
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "The message is empty: nothing was sent.")
        return await self.send_content(room_id, {"type": "m.text", "body": text})

    def _check_fits(self, room_id: str, plaintext: dict[str, Any]) -> None:
        """The server limits the encrypted content: say how much of this text would fit, in characters."""
        if self._machine.encrypted_size(room_id, plaintext) <= MAX_CONTENT_BYTES:
            return
        body = plaintext.get("body")
        if plaintext.get("type") != "m.text" or not isinstance(body, str):
            raise TokenIMError(ErrorCode.BODY_TOO_LARGE, "This message is too big to send once encrypted.")
        low, high = 0, len(body)  # the longest prefix that fits: encoded size grows with the prefix
        while low < high:
            mid = (low + high + 1) // 2
            if self._machine.encrypted_size(room_id, {**plaintext, "body": body[:mid]}) <= MAX_CONTENT_BYTES:
                low = mid
            else:
                high = mid - 1
        raise TokenIMError(
            ErrorCode.BODY_TOO_LARGE,
            f"This text is {len(body):,} characters long; one message holds at most {low:,} characters of it "
            f"(the limit is {MAX_CONTENT_BYTES:,} bytes once encrypted and encoded). Nothing was sent.",
            details={"length": len(body), "max_length": low},
        )

    # ---- receiving ----------------------------------------------------------------------------

    def _pos(self) -> tuple[int, int]:
        return int(self._state.store.get_meta("sync_pos") or 0), int(self._state.store.get_meta("to_device_after") or 0)

    async def process_to_device(self, messages: list[dict[str, Any]]) -> int:
        """Decrypt to-device messages (room keys), persist, then return the highest id handled."""
        highest = 0
        # One key query for all the senders of this batch, not one per message.
        senders = sorted({m["sender"] for m in messages if isinstance(m.get("sender"), str)})
        known = {(d.user_id, d.device_id): d for d in await self._keys.devices_of(senders)} if senders else {}
        for msg in messages:
            highest = max(highest, int(msg["id"]))
            try:
                sender_device = known.get((msg["sender"], msg["sender_device"]))
                content = msg["content"]
                if isinstance(content, dict):
                    self._machine.receive_to_device(msg["sender"], content, sender_device)
            except (CryptoError, ValueError, TypeError, KeyError, RecursionError):
                # A malformed or forged message is dropped (and acknowledged): it must never block the queue.
                continue
        self._state.persist()
        await self._new_keys()
        return highest

    async def _new_keys(self) -> None:
        if self._after_new_keys is not None:
            await self._after_new_keys()

    async def decrypt_events(self, events: list[dict[str, Any]], *, meta: dict[str, str] | None = None) -> list[Message]:
        """Room events to messages (membership and other state events are skipped). The crypto state, what each
        message is (file or not) and `meta` (the sync position) are saved in one transaction."""
        senders = {e["sender"] for e in events if e["type"] == ENCRYPTED}  # your other devices' too: a fresh profile
        if not any(self._from_another_own_device(e) for e in events):  # knows none of them until it asks
            senders.discard(self._state.user_id)
        unknown = [s for s in senders if s not in self._machine.pins or not self._known_devices(s)]
        rotated = {str(e["content"]["user_id"]) for e in events if _rotation(e) and not self._key_event_seen(e)}
        if unknown or rotated:
            await self._keys.devices_of(sorted(set(unknown) | rotated))  # a rotation is followed (or not) here
        out = []
        records: Records = {FILE: {}, NOT_FILE: {}, KEY_EVENT: {}}
        statuses: dict[str, VerificationStatus] = {}  # per sender: each is a read of the profile
        for event in events:
            if event["type"] == ENCRYPTED:
                out.append(self._decrypt_event(event, records, statuses))
            elif event["type"] in (MEMBER, DEVICE_LIST):
                self._rooms.forget_devices(event["room_id"])
                if _rotation(event):
                    out.append(self._key_event(event, records))
        self._state.persist(records=records, meta=meta)
        return out

    def _key_event_seen(self, event: dict[str, Any]) -> bool:
        return self._state.store.get_record(KEY_EVENT, str(event["event_id"])) is not None

    def _key_event(self, event: dict[str, Any], records: Records) -> Message:
        """The line for a member's key rotation: decided when first seen (against the keys followed then) and
        kept, so reading the room again later shows the same line."""
        user_id, device_id = str(event["content"]["user_id"]), event["content"].get("device_id")
        saved = self._state.store.get_record(KEY_EVENT, str(event["event_id"]))
        if saved is not None:
            line = json.loads(saved)
            notice, warning = line.get("notice"), line.get("warning")
        else:
            notice, warning = rotation_line(user_id, self._machine.pins.get(user_id), self._machine.key_changes.get(user_id))
            records[KEY_EVENT][str(event["event_id"])] = json.dumps({"notice": notice, "warning": warning}).encode()
        return Message(
            str(event["event_id"]),
            str(event["room_id"]),
            user_id,
            device_id if isinstance(device_id, str) else None,
            None,
            int(event["ts"]),
            warning is None,
            warning=warning,
            event="key_rotated",
            notice=notice,
        )

    def _from_another_own_device(self, event: dict[str, Any]) -> bool:
        content = event.get("content")
        device = content.get("device_id") if isinstance(content, dict) else None
        return event["type"] == ENCRYPTED and event["sender"] == self._state.user_id and device != self._state.device_id

    def _known_devices(self, user_id: str) -> bool:
        return any(u == user_id for u, _ in self._machine.trusted_devices)

    def decrypt_event(self, event: dict[str, Any]) -> Message:
        """One room event as a message, decrypted with the keys this device holds; saved at once."""
        records: Records = {FILE: {}, NOT_FILE: {}}
        message = self._decrypt_event(event, records, {})
        self._state.persist(records=records)
        return message

    def _decrypt_event(self, event: dict[str, Any], records: Records, statuses: dict[str, VerificationStatus]) -> Message:
        result = self._machine.decrypt_room_event(event)
        message = self._with_verification(
            _to_message(result),
            statuses,
            sender_revoked=isinstance(result, RoomMessage) and result.sender_revoked,
            from_key_file=isinstance(result, RoomMessage) and result.from_key_file,
        )
        if message.file is not None:
            records[FILE][message.id] = json.dumps(message.file).encode()
        elif message.warning is None:
            records[NOT_FILE][message.id] = b""  # so `download` can say it is not a file
        return message

    def _with_verification(
        self,
        message: Message,
        statuses: dict[str, VerificationStatus],
        *,
        sender_revoked: bool = False,
        from_key_file: bool = False,
    ) -> Message:
        """Say whether the sender is verified by you (SAS or safety number), and if not why: every unverified
        message says why, your own from another of your devices too."""
        if message.warning is not None:
            return message
        device = message.sender_device or "?"
        if sender_revoked:  # the device's fault, not the master key's
            return replace(message, verified_by=None, why_not=f"device {device} of {message.sender} was revoked")
        if from_key_file and not message.verified:
            why = f"{KEY_FILE_WHY}: it is verified once device {device} gives this device the key itself"
            return replace(message, why_not=why)
        if message.sender == self._state.user_id:
            if message.verified:
                return message
            return replace(message, why_not=f"your device {device} is not signed by your current master key")
        status = statuses.get(message.sender) or statuses.setdefault(message.sender, status_of(self._state, message.sender))
        if status.verify_again or (status.verified_by is None and message.verified):
            return replace(message, why_not=status.why_not)
        if not message.verified:
            return replace(message, why_not=f"device {device} is not signed by the master key you trust for {message.sender}")
        return replace(message, verified_by=status.verified_by)

    async def sync(self) -> list[Message]:
        """Fetch everything missed since the last sync, in order; returns the new messages.

        To-device messages (room keys) are drained before any room event is decrypted.
        """
        out: list[Message] = []
        while True:
            pos, after = self._pos()
            page = await self._transport.request("GET", f"/v1/sync?since={pos}&to_device_after={after}&limit=1000", SyncResponse)
            if page.to_device:
                highest = await self.process_to_device(page.to_device)
                await self._transport.post("/v1/to_device/ack", {"up_to": highest}, OkResponse)
                self._state.store.set_meta({"to_device_after": str(highest)})
                if len(page.to_device) == 1000:
                    continue  # more keys may be waiting: fetch them before decrypting these events
            out.extend(await self.decrypt_events(page.events, meta={"sync_pos": str(page.next_pos)}))
            if not page.limited:
                if page.one_time_keys < ONE_TIME_KEY_TARGET // 2 or not page.has_fallback_key:
                    await self._keys.replenish()
                return out

    async def history(self, room_id: str, limit: int = 50) -> list[Message]:
        """The latest `limit` messages of a room, oldest first, decrypted with the keys this device holds."""
        events: list[dict[str, Any]] = []
        before: int | None = None
        while len(events) < limit:
            query = f"?limit={min(1000, limit * 2)}" + (f"&before={before}" if before is not None else "")
            page = await self._transport.request("GET", f"/v1/rooms/{room_id}/history{query}", HistoryResponse)
            events.extend(e for e in page.events if e["type"] == ENCRYPTED or _rotation(e))
            if page.next_before is None:
                break
            before = page.next_before
        messages = await self.decrypt_events(list(reversed(events[:limit])))
        return messages

    async def listen(
        self, *, ready: asyncio.Event | None = None, on_retry: Callable[[str, float], None] | None = None
    ) -> AsyncIterator[Message]:
        """Stream new messages over the WebSocket, catching up first, until cancelled.

        A lost connection, a server restart or an unreachable server is retried with exponential backoff
        (`on_retry(reason, delay_seconds)` is told), and each connection resumes from the stored position,
        so nothing is missed or shown twice. When the access token expires the server closes with 4401:
        the client refreshes and reconnects. Only a session the server no longer honours ends the stream.
        """
        delay = RECONNECT_FIRST_S
        while True:
            self._listen_synced = False
            try:
                async for message in self._listen_once(ready):
                    yield message
                reason = "the server closed the connection"
            except TokenIMError as err:
                if err.code is ErrorCode.TOKEN_EXPIRED:
                    await self._refresh_or_retry()
                    continue
                if err.code is not ErrorCode.SERVER_UNREACHABLE:
                    raise
                reason = err.message.rstrip(".")
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                if code == 4401:
                    await self._refresh_or_retry()  # raises if the session itself is gone (logout, removed device)
                    continue
                reason = {None: "the connection was lost", 1006: "the connection was lost", 1012: "the server restarted"}.get(
                    code, "the server closed the connection"
                )
            except (OSError, TimeoutError, websockets.WebSocketException):
                reason = "the server cannot be reached"
            if self._listen_synced:
                delay = RECONNECT_FIRST_S
            wait = delay * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)
            if on_retry is not None:
                on_retry(reason, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _refresh_or_retry(self) -> None:
        try:
            await self._transport.refresh()
        except TokenIMError as err:
            if err.code is not ErrorCode.SERVER_UNREACHABLE:
                raise
            await asyncio.sleep(RECONNECT_FIRST_S)

    async def _listen_once(self, ready: asyncio.Event | None) -> AsyncIterator[Message]:
        pos, after = self._pos()
        url = self._transport.base_url.replace("http", "ws", 1) + "/v1/ws"
        headers = {"Authorization": f"Bearer {self._transport.access_token()}"}
        async with websockets.connect(url, additional_headers=headers, max_size=1 << 20, compression=None) as ws:
            await ws.send(json.dumps({"type": "sync", "since": pos, "to_device_after": after}))
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "event":
                    event = frame["event"]
                    # The position is stored (with the keys) before the message is handed out: each is delivered once.
                    decrypted = await self.decrypt_events([event], meta={"sync_pos": str(event["pos"])})
                    for message in decrypted:
                        yield message
                elif kind == "to_device":
                    highest = await self.process_to_device([frame["message"]])
                    await ws.send(json.dumps({"type": "ack_to_device", "up_to": highest}))
                    self._state.store.set_meta({"to_device_after": str(highest)})
                elif kind == "keys_low":
                    await self._keys.replenish()
                elif kind == "synced":
                    self._listen_synced = True
                    self._state.store.set_meta({"sync_pos": str(max(int(frame["pos"]), self._pos()[0]))})
                    if ready is not None:
                        ready.set()
                elif kind == "error":
                    raise TokenIMError.from_json(frame, http_status=400)


__all__ = ["FILE", "KEY_FILE_WHY", "NOT_FILE", "Message", "Messages"]
