"""Megolm room sessions: outbound (with rotation rules) and inbound (with replay detection).

Rotation: after 100 messages, after 7 days, and whenever a device the session was shared with is
no longer among the room's member devices (a member left or was removed, or a device was removed),
so nobody removed can read what is sent afterwards. Devices that appear later get the current
session from its current index: they read from that point on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import vodozemac

from tokenim.crypto.olm import CryptoError
from tokenim.crypto.padding import pad, unpad
from tokenim.protocol.keys import MEGOLM_ALGORITHM, DeviceKeys

ROTATE_AFTER_MESSAGES = 100
# What a message whose room key this device does not hold (yet) shows instead; an app fills it in when the key comes.
KEY_NOT_ARRIVED = "The key for this message has not arrived (or was never shared with this device)."
ROTATE_AFTER_MS = 7 * 24 * 60 * 60 * 1000

DeviceRef = tuple[str, str]  # (user id, device id)
InboundRef = tuple[str, str, str]  # (room id, session id, Curve25519 key of the device that sent the room key)


def _plaintext_bytes(room_id: str, plaintext: dict[str, Any]) -> bytes:
    """What Megolm encrypts: the event with its room id, padded to a size bucket (crypto/padding.py)."""
    return pad(json.dumps({**plaintext, "room_id": room_id}, separators=(",", ":")).encode())


def _megolm_base64_len(plaintext_len: int, message_index: int) -> int:
    """Length of a Megolm v1 message in unpadded base64: version, index and ciphertext fields (protobuf),
    AES-256-CBC with PKCS#7 padding, an 8-byte MAC and a 64-byte Ed25519 signature."""
    ciphertext = 16 * (plaintext_len // 16 + 1)
    raw = 1 + 1 + _varint_len(message_index) + 1 + _varint_len(ciphertext) + ciphertext + 8 + 64
    return (raw * 4 + 2) // 3


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


@dataclass
class OutboundSession:
    room_id: str
    session: vodozemac.GroupSession
    created_at: int
    message_count: int = 0
    shared_with: set[DeviceRef] = field(default_factory=set)

    def needs_rotation(self, now: int, current: set[DeviceRef]) -> str | None:
        if self.message_count >= ROTATE_AFTER_MESSAGES:
            return "message_count"
        if now - self.created_at >= ROTATE_AFTER_MS:
            return "age"
        if self.shared_with - current:
            return "membership"
        return None

    def room_key(self) -> dict[str, Any]:
        """The to-device content that lets a device decrypt from the current index on."""
        return {
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": self.room_id,
            "session_id": self.session.session_id,
            "session_key": self.session.session_key.to_base64(),
        }


@dataclass
class InboundSession:
    """A room key received from a device, with the identity of that device as Olm authenticated it."""

    room_id: str
    session: vodozemac.InboundGroupSession
    sender: str
    sender_device: str
    sender_key: str
    sender_ed25519: str
    imported: bool = False  # from a key file: the sender did not vouch for it (docs/protocol.md, "Room key files")


@dataclass(frozen=True, slots=True)
class DecryptedEvent:
    plaintext: dict[str, Any]
    message_index: int
    session: InboundSession


class RoomSessions:
    """Outbound sessions per room, inbound sessions per (room, session id, sender key), seen message indexes.

    Inbound sessions are filed under the Curve25519 key of the device that delivered them, so a
    member who forwards someone else's session key first cannot squat on that session id.
    """

    def __init__(self, user_id: str, device_id: str, curve25519: str, ed25519: str) -> None:
        self._me = (user_id, device_id, curve25519, ed25519)
        self.outbound: dict[str, OutboundSession] = {}
        self.inbound: dict[InboundRef, InboundSession] = {}
        self.seen: dict[tuple[str, int], str] = {}  # (session id, index) -> event id
        self.dirty_outbound: set[str] = set()
        self.dirty_inbound: set[InboundRef] = set()
        self.new_seen: list[tuple[str, str, int, str]] = []
        self.rotations: list[tuple[str, str]] = []

    def prepare(self, room_id: str, devices: list[DeviceKeys], now: int) -> tuple[OutboundSession, list[DeviceKeys]]:
        """The session to send with (rotated if a rule says so) and the devices that still need its key."""
        current: set[DeviceRef] = {(str(d.user_id), str(d.device_id)) for d in devices}
        out = self.outbound.get(room_id)
        reason = out.needs_rotation(now, current) if out else "new"
        if out is None or reason is not None:
            out = OutboundSession(room_id, vodozemac.GroupSession(), now)
            self.outbound[room_id] = out
            self.rotations.append((room_id, reason or "new"))
            self._add_own_inbound(out)
        self.dirty_outbound.add(room_id)
        me = (self._me[0], self._me[1])
        need = [d for d in devices if (d.user_id, d.device_id) not in out.shared_with and (d.user_id, d.device_id) != me]
        return out, need

    def discard_outbound(self, reason: str) -> None:
        """Stop using every outbound session (the next send in each room starts a new one), e.g. when another
        copy of this profile may hold the same sessions. Our own inbound copies stay, so history still reads."""
        for room_id in list(self.outbound):
            del self.outbound[room_id]
            self.rotations.append((room_id, reason))
            self.dirty_outbound.add(room_id)

    def mark_shared(self, room_id: str, devices: list[DeviceKeys]) -> None:
        self.outbound[room_id].shared_with.update((d.user_id, d.device_id) for d in devices)
        self.dirty_outbound.add(room_id)

    def _add_own_inbound(self, out: OutboundSession) -> None:
        inbound = vodozemac.InboundGroupSession(out.session.session_key)
        user_id, device_id, curve, ed = self._me
        ref = (out.room_id, out.session.session_id, curve)
        self.inbound[ref] = InboundSession(out.room_id, inbound, user_id, device_id, curve, ed)
        self.dirty_inbound.add(ref)

    def encrypt(self, room_id: str, plaintext: dict[str, Any]) -> dict[str, Any]:
        """Encrypt an event for a room; the room id goes inside so it can't be replayed into another room.

        The plaintext is padded to a size bucket (see crypto/padding.py)."""
        out = self.outbound[room_id]
        ciphertext = out.session.encrypt(_plaintext_bytes(room_id, plaintext)).to_base64()
        out.message_count += 1
        self.dirty_outbound.add(room_id)
        return self._content(out, ciphertext)

    def _content(self, out: OutboundSession, ciphertext: str) -> dict[str, Any]:
        return {
            "algorithm": MEGOLM_ALGORITHM,
            "ciphertext": ciphertext,
            "session_id": out.session.session_id,
            "sender_key": self._me[2],
            "device_id": self._me[1],
        }

    def encrypted_size(self, room_id: str, plaintext: dict[str, Any]) -> int:
        """The total length of the string fields `encrypt` would produce (what the server's size limit
        counts), computed without encrypting, so nothing is spent on a message that is too big."""
        out = self.outbound[room_id]
        ciphertext_len = _megolm_base64_len(len(_plaintext_bytes(room_id, plaintext)), out.session.message_index)
        return sum(len(v) for v in self._content(out, "").values() if isinstance(v, str)) + ciphertext_len

    def add_inbound(
        self, room_key: dict[str, Any], sender: str, sender_device: str, sender_key: str, sender_ed25519: str
    ) -> bool:
        """Store a room key received over Olm; keeps the copy that reaches furthest back."""
        try:
            room_id, session_id = str(room_key["room_id"]), str(room_key["session_id"])
            session = vodozemac.InboundGroupSession(vodozemac.SessionKey(str(room_key["session_key"])))
        except (KeyError, ValueError, TypeError):
            return False
        if session.session_id != session_id or room_key.get("algorithm") != MEGOLM_ALGORITHM:
            return False
        ref = (room_id, session_id, sender_key)
        existing = self.inbound.get(ref)
        # Keep the copy that reaches furthest back. A copy imported from a key file that the sender now delivers
        # over Olm is vouched for: the same session id is the same signing key, so it keeps reaching back and
        # becomes authenticated, with the sender Olm names.
        if existing is not None and existing.session.first_known_index <= session.first_known_index:
            if not existing.imported:
                return False
            session = existing.session
        self.inbound[ref] = InboundSession(room_id, session, sender, sender_device, sender_key, sender_ed25519)
        self.dirty_inbound.add(ref)
        return True

    def import_inbound(self, inbound: InboundSession) -> bool:
        """Keep a session restored from the key backup or a key file unless a copy reaching as far back is already here."""
        ref = (inbound.room_id, inbound.session.session_id, inbound.sender_key)
        existing = self.inbound.get(ref)
        if existing is not None and existing.session.first_known_index <= inbound.session.first_known_index:
            return False
        self.inbound[ref] = inbound
        self.dirty_inbound.add(ref)
        return True

    def decrypt(self, room_id: str, event_id: str, sender: str, content: dict[str, Any]) -> DecryptedEvent:
        """Decrypt a room event, rejecting wrong sessions, tampering, replays and forged senders."""
        session_id = content.get("session_id")
        sender_key = content.get("sender_key")
        ok = isinstance(session_id, str) and isinstance(sender_key, str)
        inbound = self.inbound.get((room_id, session_id, sender_key)) if ok else None  # type: ignore[arg-type]
        if inbound is None:
            raise CryptoError("missing_key", KEY_NOT_ARRIVED)
        try:
            message = vodozemac.MegolmMessage.from_base64(str(content.get("ciphertext")))
            decrypted = inbound.session.decrypt(message)
        except ValueError:
            raise CryptoError(
                "tampered", "This message failed its integrity check: it was tampered with or is not from this session."
            ) from None
        index = int(decrypted.message_index)
        try:
            plaintext = json.loads(unpad(bytes(decrypted.plaintext)))
        except (ValueError, RecursionError):
            raise CryptoError("malformed", "The decrypted message is not JSON.") from None
        if not isinstance(plaintext, dict) or plaintext.get("room_id") != room_id:
            raise CryptoError("replayed", "This message was encrypted for another room.")
        if (
            sender != inbound.sender
            or content.get("device_id") != inbound.sender_device
            or content.get("sender_key") != inbound.sender_key
        ):
            raise CryptoError("sender_mismatch", "The message claims a sender other than the device that owns its key.")
        # Only an event that passed every check takes the (session, index) slot: a forged copy can't burn it.
        first = self.seen.get((inbound.session.session_id, index))
        if first is not None and first != event_id:
            raise CryptoError("replayed", "This message is a replay of an earlier one.")
        if first is None:
            self.seen[(inbound.session.session_id, index)] = event_id
            self.new_seen.append((room_id, inbound.session.session_id, index, event_id))
        return DecryptedEvent(plaintext, index, inbound)
