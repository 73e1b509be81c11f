"""The crypto machine: what a device must do to send to and receive from a room, without doing I/O.

It says what to send next (`share_room_key` returns typed requests: crypto/outgoing.py) and takes
the answers back (`receive_claim`, `mark_sent`); the SDK only carries the requests and saves the state.
The machine also pins each user's master key on first sight, so a changed master key is noticed and
its devices are no longer shown as verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenim.core.errors import TokenIMError
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.megolm import DecryptedEvent, RoomSessions
from tokenim.crypto.olm import CryptoError, OlmPayload, OlmSessions
from tokenim.crypto.outgoing import KeysClaim, Outgoing, ToDevice, ToDeviceBatch
from tokenim.crypto.sas import PREFIX as VERIFICATION_PREFIX
from tokenim.protocol.api import KeysClaimResponse
from tokenim.protocol.events import ENCRYPTED, ROOM_KEY
from tokenim.protocol.keys import DeviceKeys, OneTimeKey, parse_one_time_keys

MAX_VERIFICATION_INBOX = 100  # verification messages kept until read; older ones are dropped


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """A decrypted room message, with who sent it and whether their device is verified."""

    event_id: str
    room_id: str
    sender: str
    sender_device: str
    ts: int
    content: dict[str, Any]
    verified: bool


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    """A room event that must not be shown as a message, and why."""

    event_id: str
    room_id: str
    sender: str
    ts: int
    code: str
    warning: str


class CryptoMachine:
    """Olm sessions, Megolm sessions and trust decisions for one device."""

    def __init__(self, identity: DeviceIdentity) -> None:
        self.identity = identity
        self.olm = OlmSessions(identity.account, identity.user_id, identity.device_id)
        self.rooms = RoomSessions(identity.user_id, identity.device_id, identity.curve25519, identity.ed25519)
        # Our own master key is known, not learned: a server can't substitute it on first sight.
        self.pinned_masters: dict[str, str] = {identity.user_id: identity.master.public_key}
        self.trusted_devices: dict[tuple[str, str], str] = {}  # (user, device) -> ed25519 when signed by the pinned master
        self.dirty_pins: set[str] = set()
        # Users whose server-presented master key differs from the pinned one: user -> presented key. Their
        # devices get no room keys until the pinned key comes back or the user accepts the new one.
        self.key_changes: dict[str, str] = {}
        # Verification messages (crypto/sas.py) received and authenticated over Olm, for client/verification.py.
        self.verification_inbox: list[OlmPayload] = []

    # ---- trust -------------------------------------------------------------------------------

    def observe_user(self, user_id: str, master_key: str, devices: list[DeviceKeys]) -> list[DeviceKeys]:
        """Record verified keys from a query. Returns the devices to use: none if the master key changed."""
        pinned = self.pinned_masters.get(user_id)
        if pinned is None:
            self.pinned_masters[user_id] = master_key
            self.dirty_pins.add(user_id)
            pinned = master_key
        if pinned != master_key:
            # Devices trusted under the pinned key are no longer shown as verified.
            for ref in [ref for ref in self.trusted_devices if ref[0] == user_id]:
                del self.trusted_devices[ref]
            self.key_changes[user_id] = master_key
            return []
        self.key_changes.pop(user_id, None)  # the pinned key is back (e.g. a server's swap ended)
        for d in devices:
            self.trusted_devices[(d.user_id, d.device_id)] = d.ed25519
        return devices

    def accept_master(self, user_id: str, master_key: str) -> None:
        """Pin `master_key` for `user_id` on the user's word (after comparing fingerprints), replacing the old pin."""
        if user_id == self.identity.user_id:
            raise CryptoError("own_key", "Your own master key can't be replaced here.")
        self.pinned_masters[user_id] = master_key
        self.dirty_pins.add(user_id)
        self.key_changes.pop(user_id, None)
        for ref in [ref for ref in self.trusted_devices if ref[0] == user_id]:
            del self.trusted_devices[ref]  # trusted again when next seen under the new key

    def is_verified(self, user_id: str, device_id: str, ed25519: str) -> bool:
        return self.trusted_devices.get((user_id, device_id)) == ed25519

    # ---- sending -----------------------------------------------------------------------------

    def prepare_room_send(self, room_id: str, devices: list[DeviceKeys], now: int) -> list[DeviceKeys]:
        """Rotate if needed; return the member devices that must receive the room key first."""
        _session, need = self.rooms.prepare(room_id, devices, now)
        return need

    def start_session(self, device: DeviceKeys, otk: OneTimeKey) -> None:
        """Open an Olm session to `device` from a one-time key it signed (the signature is checked)."""
        self.olm.create_outbound(device, otk)

    def share_room_key(self, room_id: str, devices: list[DeviceKeys], now: int) -> list[Outgoing]:
        """Start giving the room key to the room's member `devices`: rotates first if a rule says so.

        Returns what to send next: a `KeysClaim` for devices without an Olm session (answer it with
        `receive_claim`), else a `ToDeviceBatch` of the room key, else nothing (everyone has it)."""
        need = self.prepare_room_send(room_id, devices, now)
        if not need:
            return []
        missing = tuple(d for d in need if not self.olm.has_session(d))
        if missing:
            return [KeysClaim(room_id, missing)]
        return self._room_key_batch(room_id, need)

    def receive_claim(self, claim: KeysClaim, resp: KeysClaimResponse) -> list[Outgoing]:
        """Open sessions from the one-time keys the server handed out, then say what to send next.

        A key that is not signed by the device it is for (a server's forgery) is ignored: that device
        gets no room key now. The room key goes to every device still lacking it that has a session."""
        for d in claim.devices:
            got = resp.one_time_keys.get(d.user_id, {}).get(d.device_id)
            if got is None:
                continue
            try:
                raw = {got.key_id: got.key}  # `signed_curve25519:<id>`, as the owner uploaded it
                otk = parse_one_time_keys(raw, fallback=bool(got.key.get("fallback")))[0]
                self.start_session(d, otk)
            except (TokenIMError, CryptoError, ValueError):
                continue
        outbound = self.rooms.outbound.get(claim.room_id)
        if outbound is None:
            return []
        need = [d for d in claim.devices if (d.user_id, d.device_id) not in outbound.shared_with]
        return self._room_key_batch(claim.room_id, need)

    def _room_key_batch(self, room_id: str, need: list[DeviceKeys]) -> list[Outgoing]:
        key = self.rooms.outbound[room_id].room_key()
        messages = tuple(ToDevice(d, self.olm.encrypt(d, ROOM_KEY, key)) for d in need if self.olm.has_session(d))
        return [ToDeviceBatch(room_id, ENCRYPTED, messages)] if messages else []

    def mark_sent(self, batch: ToDeviceBatch) -> None:
        """The server accepted `batch`: its devices hold the room key of the current session."""
        outbound = self.rooms.outbound.get(batch.room_id)
        if outbound is not None and batch.event_type == ENCRYPTED:
            self.rooms.mark_shared(batch.room_id, [m.device for m in batch.messages])

    def without_room_key(self, room_id: str, devices: list[DeviceKeys]) -> list[DeviceKeys]:
        """The `devices` that do not hold the room's current key (other than this one), e.g. no session could be made."""
        outbound = self.rooms.outbound.get(room_id)
        has_key = (outbound.shared_with if outbound else set()) | {(self.identity.user_id, self.identity.device_id)}
        return [d for d in devices if (d.user_id, d.device_id) not in has_key]

    def encrypt_room_message(self, room_id: str, plaintext: dict[str, Any]) -> dict[str, Any]:
        return self.rooms.encrypt(room_id, plaintext)

    def encrypted_size(self, room_id: str, plaintext: dict[str, Any]) -> int:
        """What `encrypt_room_message` would weigh against the server's content limit (after `prepare_room_send`)."""
        return self.rooms.encrypted_size(room_id, plaintext)

    # ---- receiving ---------------------------------------------------------------------------

    def receive_to_device(self, sender: str, content: dict[str, Any], sender_device: DeviceKeys | None) -> str:
        """Decrypt and act on a to-device message; returns what it was. Raises CryptoError if rejected."""
        payload = self.olm.decrypt(sender, content, sender_device)
        if payload.type == ROOM_KEY:
            assert sender_device is not None
            self.rooms.add_inbound(payload.content, sender, payload.sender_device, payload.sender_key, sender_device.ed25519)
        elif payload.type.startswith(VERIFICATION_PREFIX):
            self.verification_inbox = [*self.verification_inbox[-(MAX_VERIFICATION_INBOX - 1) :], payload]
        return payload.type

    def decrypt_room_event(self, event: dict[str, Any]) -> RoomMessage | RejectedMessage:
        """A room event as a message to show, or as a warning to show instead."""
        event_id, room_id, sender, ts = event["event_id"], event["room_id"], event["sender"], event["ts"]
        try:
            content = event["content"]
            if not isinstance(content, dict):
                raise CryptoError("malformed", "The event's content is not an object.")
            result: DecryptedEvent = self.rooms.decrypt(room_id, event_id, sender, content)
        except CryptoError as err:
            return RejectedMessage(event_id, room_id, sender, ts, err.code, err.message)
        s = result.session
        verified = s.sender == self.identity.user_id and s.sender_device == self.identity.device_id
        verified = verified or self.is_verified(s.sender, s.sender_device, s.sender_ed25519)
        shown = {k: v for k, v in result.plaintext.items() if k != "room_id"}
        return RoomMessage(event_id, room_id, sender, s.sender_device, ts, shown, verified)


__all__ = ["CryptoError", "CryptoMachine", "RejectedMessage", "RoomMessage"]
