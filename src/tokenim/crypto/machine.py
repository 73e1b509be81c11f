"""The crypto machine: what a device must do to send to and receive from a room, without doing I/O.

It says what to send next (`share_room_key` returns typed requests: crypto/outgoing.py) and takes
the answers back (`receive_claim`, `mark_sent`); the SDK only carries the requests and saves the state.
The machine also keeps, per user, the pinned master key and the keys followed through signed rotations
(crypto/trust.py decides), and the device keys known revoked: a change that is not a signed rotation is
noticed and the user's devices are no longer shown as verified; a revoked device is refused for good.
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
from tokenim.crypto.trust import Decision, Pin, Verdict, decide
from tokenim.protocol.api import KeysClaimResponse
from tokenim.protocol.events import ENCRYPTED, ROOM_KEY
from tokenim.protocol.identity import ChainProblem
from tokenim.protocol.keys import (
    DeviceKeys,
    MasterKey,
    OneTimeKey,
    parse_master_key,
    parse_one_time_keys,
    verify_master_key,
)


@dataclass(frozen=True, slots=True)
class KeyWarning:
    """Why a user's devices are not trusted now: the verdict (never a trusted one), the master key the server
    shows (None if it is not even a well-formed, self-signed key of that user) and, when the chain itself
    does not verify, the problem."""

    verdict: Verdict
    presented: MasterKey | None
    problem: ChainProblem | None

    @property
    def acceptable(self) -> bool:
        """Whether the user may accept the presented key: only when the server's chain verifies (a broken or
        forking chain would not verify under any pin)."""
        return self.presented is not None and self.problem is None


def _presented(answer: dict[str, Any]) -> MasterKey | None:
    try:
        master = parse_master_key(answer.get("master_key"))
        verify_master_key(master)
    except TokenIMError:
        return None
    return master


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
    sender_revoked: bool = False  # the sending device was revoked by its own user: why it is not verified
    from_key_file: bool = False  # its room key came from a key file or backup: why it is not verified


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
        me, master = identity.user_id, identity.master.public_key
        self.pins: dict[str, Pin] = {me: Pin(me, master, identity.master_version, identity.master_created_at, (master,))}
        self.trusted_devices: dict[tuple[str, str], str] = {}  # (user, device) -> ed25519 when signed by the pinned master
        self.dirty_pins: set[str] = set()
        # Per user, the keys of their devices named in their verified revocations: refused for good, even if the
        # server hides the revocation. Kept per user so that one user's revocation never touches another's device.
        self.revoked_keys: dict[str, set[str]] = {}
        self.dirty_revoked: set[str] = set()
        self.legacy_revoked_records: set[str] = set()  # crypto/persist.py LEGACY_REVOKED records, to delete
        # Users whose keys the server now shows in a way that is not a signed continuation of the pinned chain.
        # Their devices get no room keys until the pinned chain comes back or the user accepts the new key.
        self.key_changes: dict[str, KeyWarning] = {}
        # Verification messages (crypto/sas.py) received and authenticated over Olm, for client/verification.py.
        self.verification_inbox: list[OlmPayload] = []

    # ---- trust -------------------------------------------------------------------------------

    @property
    def pinned_masters(self) -> dict[str, str]:
        """The master key pinned for each user (a read-only view of `pins`)."""
        return {user_id: pin.master_key for user_id, pin in self.pins.items()}

    def followed_keys(self, user_id: str) -> tuple[str, ...]:
        """Every master key of `user_id` this device trusted, oldest first: the one first pinned (or accepted)
        and each one reached from it through signed rotations. Empty if the user was never pinned."""
        pin = self.pins.get(user_id)
        return pin.keys_followed if pin is not None else ()

    def observe(self, user_id: str, answer: dict[str, Any], now: int) -> Decision:
        """Decide (crypto/trust.py) how far to trust one user's entry of a keys/query answer, and remember it:
        a signed rotation moves the pin on; any other change keeps the old pin and leaves the user's devices
        unverified until the pinned chain comes back or the user accepts the new key; revoked keys are kept
        for good."""
        pinned = self.pins.get(user_id)
        decision = decide(user_id, pinned, answer, now, frozenset(self.revoked_keys.get(user_id, ())))
        self._remember_revoked(user_id, decision.revoked_keys)
        if decision.pin is not None and decision.pin is not pinned:
            self.pins[user_id] = decision.pin
            self.dirty_pins.add(user_id)
        for ref in [ref for ref in self.trusted_devices if ref[0] == user_id]:
            del self.trusted_devices[ref]
        if not decision.verdict.trusted:
            self.key_changes[user_id] = KeyWarning(decision.verdict, _presented(answer), decision.problem)
            return decision
        self.key_changes.pop(user_id, None)  # the pinned chain is back (e.g. a server's swap ended)
        for d in decision.devices.values():
            self.trusted_devices[(d.user_id, d.device_id)] = d.ed25519
        return decision

    def accept_master(self, user_id: str, master_key: str, version: int, now: int) -> None:
        """Pin `master_key` (of `version`) for `user_id` on the user's word (after comparing fingerprints),
        replacing the old pin: the list of followed keys starts afresh."""
        if user_id == self.identity.user_id:
            raise CryptoError("own_key", "Your own master key can't be replaced here.")
        self.pins[user_id] = Pin(user_id, master_key, version, now, (master_key,))
        self.dirty_pins.add(user_id)
        self.key_changes.pop(user_id, None)
        for ref in [ref for ref in self.trusted_devices if ref[0] == user_id]:
            del self.trusted_devices[ref]  # trusted again when next seen under the new key

    def follow_own_rotation(self, now: int) -> None:
        """This device rotated the master key (`identity.master` is the new one): pin it, following the old."""
        me, old = self.identity.user_id, self.pins.get(self.identity.user_id)
        followed = (old.keys_followed if old is not None else ()) + (self.identity.master.public_key,)
        self.pins[me] = Pin(me, self.identity.master.public_key, self.identity.master_version, now, followed)
        self.dirty_pins.add(me)

    def revoke_keys(self, keys: set[str]) -> None:
        """Refuse these keys of one of this user's devices for good (this device just revoked it)."""
        me = self.identity.user_id
        self._remember_revoked(me, keys)
        for ref, ed25519 in list(self.trusted_devices.items()):
            if ref[0] == me and ed25519 in keys:
                del self.trusted_devices[ref]

    def _remember_revoked(self, user_id: str, keys: frozenset[str] | set[str]) -> None:
        known = self.revoked_keys.setdefault(user_id, set())
        if not keys <= known:
            known |= keys
            self.dirty_revoked.add(user_id)
        if not known:
            del self.revoked_keys[user_id]

    def is_revoked(self, user_id: str, key: str) -> bool:
        """Whether `key` belonged to a device `user_id` revoked (only that user's revocations count)."""
        return key in self.revoked_keys.get(user_id, ())

    @property
    def own_master_outdated(self) -> bool:
        """True when the pinned (current) master key of this user is not the one this device holds: another
        device rotated it, so this one can no longer sign with the user's master key."""
        pin = self.pins.get(self.identity.user_id)
        return pin is not None and pin.master_key != self.identity.master.public_key

    def is_verified(self, user_id: str, device_id: str, ed25519: str) -> bool:
        """Whether the device is signed by the user's pinned master key and was never revoked."""
        return not self.is_revoked(user_id, ed25519) and self.trusted_devices.get((user_id, device_id)) == ed25519

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

        Returns what to send next: a `ToDeviceBatch` of the room key for devices with an Olm session and a
        `KeysClaim` for those without one (answer it with `receive_claim`), or nothing (everyone has it)."""
        need = self.prepare_room_send(room_id, devices, now)
        if not need:
            return []
        missing = tuple(d for d in need if not self.olm.has_session(d))
        # Devices that have a session get the key now; the others once their one-time keys are claimed.
        ready = self._room_key_batch(room_id, [d for d in need if self.olm.has_session(d)])
        return [KeysClaim(room_id, missing), *ready] if missing else ready

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
        verified = verified and not s.imported  # a key file's claim of who sent a key is not the sender's word
        shown = {k: v for k, v in result.plaintext.items() if k != "room_id"}
        revoked = self.is_revoked(s.sender, s.sender_ed25519)
        return RoomMessage(event_id, room_id, sender, s.sender_device, ts, shown, verified, revoked, s.imported)


__all__ = ["CryptoError", "CryptoMachine", "KeyWarning", "RejectedMessage", "RoomMessage"]
