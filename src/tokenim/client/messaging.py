"""Messaging on top of the account client: rooms, end-to-end encrypted sending, sync, listening, files."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets

from tokenim.client.contacts import ExcludedDevice, KeysClient, SendResult
from tokenim.client.files import download_file, upload_file
from tokenim.client.store import ProfileStore
from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_user_id
from tokenim.core.limits import ONE_TIME_KEY_TARGET
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.machine import RejectedMessage, RoomMessage
from tokenim.crypto.olm import CryptoError
from tokenim.crypto.outgoing import KeysClaim
from tokenim.protocol.api import (
    HistoryResponse,
    KeysClaimResponse,
    MembersResponse,
    OkResponse,
    RoomsResponse,
    RoomSummary,
    SendResponse,
    SyncResponse,
)
from tokenim.protocol.events import DEVICE_LIST, ENCRYPTED, MAX_CONTENT_BYTES, MEMBER
from tokenim.protocol.keys import DeviceKeys

M = TypeVar("M")
SEND_RETRIES = 3
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0
NOT_FILE = "not_file"  # record kind: ids of messages received that carry no file
# Member devices of a room are cached for a long-running client; membership and device-list events seen in
# sync drop the entry at once, so a leave, removal or removed device still rotates the key on the next send.
ROOM_DEVICES_TTL_MS = 5 * 60 * 1000


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

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for optional in ("file", "warning"):
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


class Client(KeysClient):
    """A device that chats: every message is encrypted here and decrypted here."""

    def __init__(self, store: ProfileStore, identity: DeviceIdentity, http: httpx.AsyncClient, clock: Clock) -> None:
        super().__init__(store, identity, http, clock)
        self._room_devices: dict[str, tuple[int, list[DeviceKeys], list[ExcludedDevice]]] = {}
        self._listen_synced = False

    def forget_room_devices(self, room_id: str) -> None:
        self._room_devices.pop(room_id, None)

    def _trust_changed(self) -> None:
        self._room_devices.clear()

    async def room_recipients(self, room_id: str) -> tuple[list[DeviceKeys], list[ExcludedDevice]]:
        """The verified devices of the room's joined members, and the member devices left out (cached; see
        ROOM_DEVICES_TTL_MS)."""
        hit = self._room_devices.get(room_id)
        if hit is not None and self._clock.now_ms() - hit[0] <= ROOM_DEVICES_TTL_MS:
            return hit[1], hit[2]
        members = [m.user_id for m in (await self.members(room_id)).members if m.membership == "join"]
        devices, excluded = await self.recipients(members)
        self._room_devices[room_id] = (self._clock.now_ms(), devices, excluded)
        return devices, excluded

    async def room_devices(self, room_id: str) -> list[DeviceKeys]:
        """The verified devices of the room's joined members."""
        return (await self.room_recipients(room_id))[0]

    # ---- rooms -------------------------------------------------------------------------------

    async def rooms(self) -> RoomsResponse:
        return await self._request("GET", "/v1/rooms", RoomsResponse)

    async def create_room(self, name: str, invite: list[str] | None = None) -> RoomSummary:
        return await self._post("/v1/rooms", {"name": name, "invite": [self.full_user_id(u) for u in invite or []]}, RoomSummary)

    async def direct_room(self, user: str) -> RoomSummary:
        return await self._post("/v1/rooms/direct", {"user_id": self.full_user_id(user)}, RoomSummary)

    async def invite(self, room_id: str, user: str) -> None:
        await self._post(f"/v1/rooms/{room_id}/invite", {"user_id": self.full_user_id(user)}, OkResponse)

    async def join(self, room_id: str) -> RoomSummary:
        return await self._post(f"/v1/rooms/{room_id}/join", {}, RoomSummary)

    async def leave(self, room_id: str) -> None:
        await self._post(f"/v1/rooms/{room_id}/leave", {}, OkResponse)
        self.forget_room_devices(room_id)

    async def remove(self, room_id: str, user: str) -> None:
        await self._post(f"/v1/rooms/{room_id}/remove", {"user_id": self.full_user_id(user)}, OkResponse)
        # Our own change: don't wait for its event in sync, the next message must already rotate the key.
        self.forget_room_devices(room_id)

    async def rename(self, room_id: str, name: str) -> None:
        await self._post(f"/v1/rooms/{room_id}/name", {"name": name}, OkResponse)

    async def room(self, room_id: str) -> RoomSummary:
        return await self._request("GET", f"/v1/rooms/{room_id}", RoomSummary)

    async def members(self, room_id: str) -> MembersResponse:
        return await self._request("GET", f"/v1/rooms/{room_id}/members", MembersResponse)

    async def resolve_target(self, target: str, *, create: bool = False) -> str:
        """A room id, a room name, or a person (`@bob`: the direct chat with them; made only if `create`).

        A name that several of your rooms share is refused with their ids listed (`details.candidates`).
        """
        if target.startswith("@"):
            user_id = str(check_user_id(self.full_user_id(target)))
            if create:
                return (await self.direct_room(user_id)).room_id
            direct = [r for r in (await self.rooms()).rooms if r.kind == "direct" and user_id in r.members]
            if not direct:
                raise TokenIMError(
                    ErrorCode.NOT_FOUND, f"You have no direct chat with {user_id} yet: send them a message to start one."
                )
            return direct[0].room_id
        if target.startswith("!"):
            return target
        key = target.strip().casefold()
        rooms = [r for r in (await self.rooms()).rooms if r.kind == "group" and r.name.strip().casefold() == key]
        exact = [r for r in rooms if r.name == target]
        matches = exact if len(exact) == 1 else rooms
        if not matches:
            raise TokenIMError(ErrorCode.NOT_FOUND, f"You are in no room named '{target}': see `tokenim rooms`.")
        if len(matches) > 1:
            listed = ", ".join(f"{r.room_id} ({r.membership})" for r in matches)
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"Several of your rooms are named '{target}': {listed}. Name one by its id.",
                details={"candidates": [r.model_dump() for r in matches]},
            )
        return matches[0].room_id

    # ---- sending ------------------------------------------------------------------------------

    async def share_room_key(self, room_id: str) -> list[ExcludedDevice]:
        """Rotate if a rule says so, and give the current room key to member devices that lack it.

        Returns the member devices left out: not trusted, or no Olm session could be made with them."""
        excluded = await self._share_room_key(room_id)
        self.persist_crypto()
        return excluded

    async def _share_room_key(self, room_id: str) -> list[ExcludedDevice]:
        """The machine says what to send; this carries it. Saved here only when something leaves the device."""
        devices, excluded = await self.room_recipients(room_id)
        outgoing = self.machine.share_room_key(room_id, devices, self._clock.now_ms())
        while outgoing:
            request = outgoing.pop(0)
            if isinstance(request, KeysClaim):
                claimed = await self._post("/v1/keys/claim", request.body(), KeysClaimResponse)
                outgoing.extend(self.machine.receive_claim(request, claimed))
            else:
                async with self.numbered_send() as seq:  # the advanced Olm ratchets are saved with the number
                    await self._sending(self._post("/v1/to_device", request.body(seq), OkResponse))
                self.machine.mark_sent(request)
        return excluded + [
            ExcludedDevice(
                user_id=d.user_id,
                device_id=d.device_id,
                reason="no_session",
                message=f"no encrypted channel to device {d.device_id} of {d.user_id}: the server had no valid "
                "one-time key for it (it gets the key with a later message once it has uploaded new ones).",
            )
            for d in self.machine.without_room_key(room_id, devices)
        ]

    async def send_content(self, room_id: str, plaintext: dict[str, Any]) -> SendResult:
        """Encrypt and send; retried with the same transaction id so a lost answer never duplicates.

        The result names every member device left out of the message, and why."""
        self.next_send_seq()  # a stale copy stops before it encrypts anything
        excluded = await self._share_room_key(room_id)  # saved below, with the message's ratchet advance
        self._check_fits(room_id, plaintext)
        content = self.machine.encrypt_room_message(room_id, plaintext)
        # The number and the advanced ratchet are saved before the ciphertext leaves: neither is used twice.
        async with self.numbered_send() as seq:
            txn_id = secrets.token_urlsafe(12)
            body = {"type": ENCRYPTED, "content": content, "device_seq": seq}
            for attempt in range(SEND_RETRIES):
                try:
                    put = self._request("PUT", f"/v1/rooms/{room_id}/send/{txn_id}", SendResponse, body=body)
                    sent = await self._sending(put)
                    return SendResult(event_id=sent.event_id, pos=sent.pos, seq=sent.seq, excluded=excluded)
                except TokenIMError as err:
                    if err.code is not ErrorCode.SERVER_UNREACHABLE or attempt == SEND_RETRIES - 1:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _sending(self, request: Awaitable[M]) -> M:
        """A send to the server; a `profile_forked` refusal marks this copy stale before it is raised."""
        try:
            return await request
        except TokenIMError as err:
            if err.code is ErrorCode.PROFILE_FORKED:
                raise self.profile_forked() from None
            raise

    async def send_text(self, room_id: str, text: str) -> SendResult:
        """Send a text message; an empty one, or one too big to fit once encrypted, is refused before sending."""
        if not text.strip():
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "The message is empty: nothing was sent.")
        return await self.send_content(room_id, {"type": "m.text", "body": text})

    def _check_fits(self, room_id: str, plaintext: dict[str, Any]) -> None:
        """The server limits the encrypted content: say how much of this text would fit, in characters."""
        if self.machine.encrypted_size(room_id, plaintext) <= MAX_CONTENT_BYTES:
            return
        body = plaintext.get("body")
        if plaintext.get("type") != "m.text" or not isinstance(body, str):
            raise TokenIMError(ErrorCode.BODY_TOO_LARGE, "This message is too big to send once encrypted.")
        low, high = 0, len(body)  # the longest prefix that fits: encoded size grows with the prefix
        while low < high:
            mid = (low + high + 1) // 2
            if self.machine.encrypted_size(room_id, {**plaintext, "body": body[:mid]}) <= MAX_CONTENT_BYTES:
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
        return int(self.store.get_meta("sync_pos") or 0), int(self.store.get_meta("to_device_after") or 0)

    async def process_to_device(self, messages: list[dict[str, Any]]) -> int:
        """Decrypt to-device messages (room keys), persist, then return the highest id handled."""
        highest = 0
        # One key query for all the senders of this batch, not one per message.
        senders = sorted({m["sender"] for m in messages if isinstance(m.get("sender"), str)})
        known = {(d.user_id, d.device_id): d for d in await self.devices_of(senders)} if senders else {}
        for msg in messages:
            highest = max(highest, int(msg["id"]))
            try:
                sender_device = known.get((msg["sender"], msg["sender_device"]))
                content = msg["content"]
                if isinstance(content, dict):
                    self.machine.receive_to_device(msg["sender"], content, sender_device)
            except (CryptoError, ValueError, TypeError, KeyError, RecursionError):
                # A malformed or forged message is dropped (and acknowledged): it must never block the queue.
                continue
        self.persist_crypto()
        return highest

    async def decrypt_events(self, events: list[dict[str, Any]], *, meta: dict[str, str] | None = None) -> list[Message]:
        """Room events to messages (membership and other state events are skipped). The crypto state, what each
        message is (file or not) and `meta` (the sync position) are saved in one transaction."""
        senders = {e["sender"] for e in events if e["type"] == ENCRYPTED and e["sender"] != self.user_id}
        unknown = [s for s in senders if s not in self.machine.pinned_masters or not self._known_devices(s)]
        if unknown:
            await self.devices_of(unknown)
        out = []
        records: dict[str, dict[str, bytes | None]] = {"file": {}, NOT_FILE: {}}
        for event in events:
            if event["type"] == ENCRYPTED:
                out.append(self._decrypt_event(event, records))
            elif event["type"] in (MEMBER, DEVICE_LIST):
                self.forget_room_devices(event["room_id"])
        self.persist_crypto(records=records, meta=meta)
        return out

    def _known_devices(self, user_id: str) -> bool:
        return any(u == user_id for u, _ in self.machine.trusted_devices)

    def decrypt_event(self, event: dict[str, Any]) -> Message:
        """One room event as a message, decrypted with the keys this device holds; saved at once."""
        records: dict[str, dict[str, bytes | None]] = {"file": {}, NOT_FILE: {}}
        message = self._decrypt_event(event, records)
        self.persist_crypto(records=records)
        return message

    def _decrypt_event(self, event: dict[str, Any], records: dict[str, dict[str, bytes | None]]) -> Message:
        message = _to_message(self.machine.decrypt_room_event(event))
        if message.file is not None:
            records["file"][message.id] = json.dumps(message.file).encode()
        elif message.warning is None:
            records[NOT_FILE][message.id] = b""  # so `download` can say it is not a file
        return message

    async def sync(self) -> list[Message]:
        """Fetch everything missed since the last sync, in order; returns the new messages.

        To-device messages (room keys) are drained before any room event is decrypted.
        """
        out: list[Message] = []
        while True:
            pos, after = self._pos()
            page = await self._request("GET", f"/v1/sync?since={pos}&to_device_after={after}&limit=1000", SyncResponse)
            if page.to_device:
                highest = await self.process_to_device(page.to_device)
                await self._post("/v1/to_device/ack", {"up_to": highest}, OkResponse)
                self.store.set_meta({"to_device_after": str(highest)})
                if len(page.to_device) == 1000:
                    continue  # more keys may be waiting: fetch them before decrypting these events
            out.extend(await self.decrypt_events(page.events, meta={"sync_pos": str(page.next_pos)}))
            if not page.limited:
                if page.one_time_keys < ONE_TIME_KEY_TARGET // 2 or not page.has_fallback_key:
                    await self.replenish_keys()
                return out

    async def history(self, room_id: str, limit: int = 50) -> list[Message]:
        """The latest `limit` messages of a room, oldest first, decrypted with the keys this device holds."""
        events: list[dict[str, Any]] = []
        before: int | None = None
        while len(events) < limit:
            query = f"?limit={min(1000, limit * 2)}" + (f"&before={before}" if before is not None else "")
            page = await self._request("GET", f"/v1/rooms/{room_id}/history{query}", HistoryResponse)
            events.extend(e for e in page.events if e["type"] == ENCRYPTED)
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
                reason = "the connection was lost" if code in (None, 1006) else f"the server closed the connection ({code})"
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
            await self.refresh()
        except TokenIMError as err:
            if err.code is not ErrorCode.SERVER_UNREACHABLE:
                raise
            await asyncio.sleep(RECONNECT_FIRST_S)

    async def _listen_once(self, ready: asyncio.Event | None) -> AsyncIterator[Message]:
        pos, after = self._pos()
        url = str(self._http.base_url).replace("http", "ws", 1) + "/v1/ws"
        headers = {"Authorization": f"Bearer {self._access_token()}"}
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
                    self.store.set_meta({"to_device_after": str(highest)})
                elif kind == "keys_low":
                    await self.replenish_keys()
                elif kind == "synced":
                    self._listen_synced = True
                    self.store.set_meta({"sync_pos": str(max(int(frame["pos"]), self._pos()[0]))})
                    if ready is not None:
                        ready.set()
                elif kind == "error":
                    raise TokenIMError.from_json(frame, http_status=400)

    # ---- files --------------------------------------------------------------------------------

    async def send_file(self, room_id: str, path: Path) -> SendResult:
        """Encrypt the file in chunks while uploading it; the key travels in the encrypted message."""
        self.next_send_seq()  # a stale copy of the profile uploads nothing
        return await self.send_content(room_id, await upload_file(self, path))

    async def download(self, event_id: str, out: Path, *, overwrite: bool = False) -> dict[str, Any]:
        """Fetch a file sent in a message, check its hash and decrypt it to `out`, which must not exist
        unless `overwrite`; returns the file's description (name, size, sha256…)."""
        info = await self.file_message(event_id)
        await download_file(self, info, out, overwrite=overwrite)
        return info

    async def file_message(self, event_id: str) -> dict[str, Any]:
        """The description of the file a message carries (syncing first if it is not known yet)."""
        info = self._file_info(event_id)
        if info is None:
            await self.sync()
            info = self._file_info(event_id)
        if info is None:
            if self.store.get_record(NOT_FILE, event_id) is not None:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Message {event_id} is a text message, not a file.")
            raise TokenIMError(
                ErrorCode.NOT_FOUND, f"No file message {event_id} is known here: check the id with `tokenim read`."
            )
        return info

    def _file_info(self, event_id: str) -> dict[str, Any] | None:
        raw = self.store.get_record("file", event_id)
        return None if raw is None else dict(json.loads(raw))


__all__ = ["Client", "Message"]
