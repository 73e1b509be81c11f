"""The channel between a new device and the device that approves it, bound to a short one-time code.

SPAKE2 (the `spake2` package, as magic-wormhole uses it) with the code's secret half as the password
gives both devices the same key only if both typed the same code; a relaying server that sees every
message learns nothing it could test guesses against offline. From that key HKDF-SHA256 derives one
AES-256-GCM key per direction and one confirmation key per side. Each side proves it holds the key
(an HMAC over the transcript, which includes the new device's keys) before anything secret is sent, so
a server that swaps a message or a key in the middle is caught by both. docs/protocol.md, "Linking a
new device", is the specification; this module does no I/O and reads no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

import vodozemac
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]

from tokenim.core.canonical import canonical_json
from tokenim.core.encoding import b64encode
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.signing import sign_json, verify_json
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.megolm import InboundSession, RoomSessions
from tokenim.protocol.keys import DEVICE_ALGORITHMS, MEGOLM_ALGORITHM, DeviceKeys, parse_device_keys
from tokenim.protocol.link import CODE_ALPHABET, LINK_ID_LENGTH, LINK_PASSWORD_LENGTH, LinkFailure, LinkSide

PROTOCOL = "tokenim.link.v1"
PAKE_SEQ = 1  # each side's first mailbox message is its SPAKE2 message; every later one is sealed


@dataclass(frozen=True, slots=True)
class LinkCode:
    """`K7QM2X-ABCD-EFGH`: the slot's id (made by the server) and the secret half (made by the new device)."""

    link_id: str
    password: str

    def __str__(self) -> str:
        half = LINK_PASSWORD_LENGTH // 2
        return f"{self.link_id}-{self.password[:half]}-{self.password[half:]}"

    @classmethod
    def new(cls, link_id: str) -> LinkCode:
        """A fresh secret half for the slot `link_id`."""
        return cls(link_id, "".join(secrets.choice(CODE_ALPHABET) for _ in range(LINK_PASSWORD_LENGTH)))

    @classmethod
    def parse(cls, text: str) -> LinkCode:
        """Read a code as a person typed it: any case, with or without dashes and spaces."""
        chars = "".join(c for c in text if c not in "- \t").upper()
        if len(chars) != LINK_ID_LENGTH + LINK_PASSWORD_LENGTH or any(c not in CODE_ALPHABET for c in chars):
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"That is not a link code: a code looks like K7QM2X-ABCD-EFGH ({LINK_ID_LENGTH + LINK_PASSWORD_LENGTH} "
                "letters and digits, shown by `tokenim devices link` on the new device).",
            )
        return cls(chars[:LINK_ID_LENGTH], chars[LINK_ID_LENGTH:])


class LinkError(Exception):
    """The channel refused a message; `reason` is what both sides are told."""

    def __init__(self, reason: LinkFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


FAILURE_SENTENCES = {
    LinkFailure.MISMATCH: "The link code did not match on the two devices (or the server changed a message between "
    "them): nothing was shared. Start again with a new code.",
    LinkFailure.TAMPERED: "A message between the two devices was changed, replayed or reordered on the way (the server "
    "is not behaving): the link was stopped.",
    LinkFailure.REFUSED: "The approving device refused the new device's keys: the link was stopped.",
    LinkFailure.CANCELLED: "The link was cancelled on the other device.",
    LinkFailure.ERROR: "The other device could not finish the link: start again with a new code.",
}


# What the approving device's person is told instead: they typed the code, so a mismatch is most likely theirs.
APPROVER_SENTENCES = {
    LinkFailure.MISMATCH: "The code you typed does not match the one the new device shows (or the server changed a "
    "message): nothing was shared. Check the code, then start again on the new device for a new code and type that.",
}


def failure(reason: LinkFailure, *, approver: bool = False, found: str | None = None) -> TokenIMError:
    """The error a side raises when the link failed for `reason` (its own finding, or the other side's). The
    side that refused the other's keys says what it found (`found`): the other side only learns it refused."""
    sentence = APPROVER_SENTENCES.get(reason, FAILURE_SENTENCES[reason]) if approver else FAILURE_SENTENCES[reason]
    if reason is LinkFailure.REFUSED and found:
        sentence = f"{found.rstrip('.')}: the link was stopped and nothing was shared."
    return TokenIMError(ErrorCode.LINK_FAILED, sentence, details={"reason": reason.value})


def relayed_failure(err: TokenIMError, *, approver: bool) -> TokenIMError:
    """The server's `link_failed` (the other side gave up) as this side's sentence for the reason it gives."""
    reason = err.details.get("reason") if err.code is ErrorCode.LINK_FAILED and err.details else None
    try:
        return failure(LinkFailure(str(reason)), approver=approver) if reason is not None else err
    except ValueError:
        return err


def _hkdf(key: bytes, salt: bytes, label: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, f"{PROTOCOL} {label}".encode()).derive(key)


class LinkChannel:
    """One side of the channel. Call `pake_message`, hand the other side's to `receive_pake`, then `seal` and
    `open` the numbered mailbox messages (sequence 2 onwards) and exchange `confirmation`s."""

    def __init__(self, side: LinkSide, code: LinkCode, user_id: str) -> None:
        self.side = side
        self.code = code
        self.user_id = user_id
        ids = {s: f"{PROTOCOL}|{user_id}|{code.link_id}|{s.value}".encode() for s in LinkSide}
        make = SPAKE2_A if side is LinkSide.NEW else SPAKE2_B
        self._pake = make(code.password.encode(), idA=ids[LinkSide.NEW], idB=ids[LinkSide.APPROVER])
        self.pake_message: bytes = self._pake.start()
        self._keys: dict[str, bytes] = {}
        self._transcript: dict[str, str] = {}

    @property
    def other(self) -> LinkSide:
        return LinkSide.APPROVER if self.side is LinkSide.NEW else LinkSide.NEW

    def receive_pake(self, theirs: bytes) -> None:
        """Finish SPAKE2 with the other side's message and derive the channel's keys."""
        try:
            shared: bytes = self._pake.finish(theirs)
        except Exception:  # the spake2 package raises its own errors, ValueError and AssertionError for bad input
            raise LinkError(LinkFailure.TAMPERED, "The other device's first message is malformed.") from None
        mine, other = b64encode(self.pake_message), b64encode(theirs)
        self._transcript = {
            "protocol": PROTOCOL,
            "user_id": self.user_id,
            "link_id": self.code.link_id,
            "pake_new": mine if self.side is LinkSide.NEW else other,
            "pake_approver": other if self.side is LinkSide.NEW else mine,
        }
        salt = hashlib.sha256(canonical_json(self._transcript)).digest()
        for label in ("seal new", "seal approver", "confirm new", "confirm approver"):
            self._keys[label] = _hkdf(shared, salt, label)

    def _aad(self, side: LinkSide, seq: int) -> bytes:
        return f"{PROTOCOL}|{self.user_id}|{self.code.link_id}|{side.value}|{seq}".encode()

    def seal(self, seq: int, message: dict[str, Any]) -> bytes:
        """Encrypt this side's message number `seq` (2 or more): the number is the nonce and is authenticated."""
        key = self._keys[f"seal {self.side.value}"]
        nonce = seq.to_bytes(12, "big")
        return AESGCM(key).encrypt(nonce, canonical_json(message), self._aad(self.side, seq))

    def open(self, seq: int, data: bytes) -> dict[str, Any]:
        """Decrypt the other side's message number `seq`. The first sealed message failing means the keys differ
        (wrong code, or a changed SPAKE2 message); a later one failing means it was changed on the way."""
        key = self._keys[f"seal {self.other.value}"]
        try:
            plain = AESGCM(key).decrypt(seq.to_bytes(12, "big"), data, self._aad(self.other, seq))
            message = json.loads(plain)
        except (InvalidTag, ValueError):
            reason = LinkFailure.MISMATCH if seq == PAKE_SEQ + 1 else LinkFailure.TAMPERED
            raise LinkError(reason, FAILURE_SENTENCES[reason]) from None
        if not isinstance(message, dict):
            raise LinkError(LinkFailure.TAMPERED, FAILURE_SENTENCES[LinkFailure.TAMPERED])
        return message

    def _mac(self, side: LinkSide, bound: Bound) -> str:
        data = canonical_json({**self._transcript, "master_key": bound.master_key, "device_keys": bound.device_keys})
        return b64encode(hmac.new(self._keys[f"confirm {side.value}"], f"{side.value}|".encode() + data, "sha256").digest())

    def confirmation(self, bound: Bound) -> str:
        """This side's key confirmation: an HMAC over the transcript, the master key object and the new device's
        (device-signed) keys, so both sides confirm the same keys or neither does."""
        return self._mac(self.side, bound)

    def check_confirmation(self, bound: Bound, mac: object) -> None:
        """Check the other side's confirmation over the same transcript and keys."""
        if not isinstance(mac, str) or not hmac.compare_digest(mac, self._mac(self.other, bound)):
            raise LinkError(LinkFailure.TAMPERED, FAILURE_SENTENCES[LinkFailure.TAMPERED])


@dataclass(frozen=True, slots=True)
class Bound:
    """What the key confirmations cover besides the transcript: the user's master key object (sent by the
    approving device) and the new device's keys object as the new device signed it."""

    master_key: dict[str, Any]
    device_keys: dict[str, Any]


# ---- the new device's keys ---------------------------------------------------------------------


def device_signed_keys(identity: DeviceIdentity, created_at: int) -> dict[str, Any]:
    """The new device's keys object, signed by the device only: the approving device adds the master signature."""
    obj = {
        "user_id": identity.user_id,
        "device_id": identity.device_id,
        "algorithms": list(DEVICE_ALGORITHMS),
        "keys": {f"curve25519:{identity.device_id}": identity.curve25519, f"ed25519:{identity.device_id}": identity.ed25519},
        "master_key_version": identity.master_version,
        "created_at": created_at,
    }
    return sign_json(obj, identity.user_id, identity.device_id, identity)


def check_new_device(raw: object, user_id: str, master_version: int) -> DeviceKeys:
    """The approving device's checks before it signs: well formed, self-signed by the device and by nothing else,
    of this user, naming the current master key version."""
    try:
        dk = parse_device_keys(raw)
        verify_json(dk.raw, dk.user_id, dk.device_id, dk.ed25519, what="new device's keys")
    except TokenIMError as exc:
        raise LinkError(LinkFailure.REFUSED, f"The new device's keys are not valid: {exc.message}") from None
    sigs = dk.raw.get("signatures")
    if not isinstance(sigs, dict) or set(sigs) != {dk.user_id} or set(sigs[dk.user_id]) != {f"ed25519:{dk.device_id}"}:
        raise LinkError(LinkFailure.REFUSED, "The new device's keys carry signatures other than the device's own.")
    if dk.user_id != user_id:
        raise LinkError(LinkFailure.REFUSED, f"The new device is for {dk.user_id}, not for you ({user_id}).")
    if dk.master_key_version != master_version:
        raise LinkError(LinkFailure.REFUSED, "The new device names another version of your master key.")
    if dk.ed25519 == dk.curve25519:
        raise LinkError(LinkFailure.REFUSED, "The new device's two keys are the same key.")
    return dk


# ---- room keys ---------------------------------------------------------------------------------


def export_room_keys(rooms: RoomSessions) -> list[dict[str, Any]]:
    """Every inbound Megolm session this device holds, from the first index it knows, with who sent its key."""
    out = []
    for (room_id, session_id, sender_key), inbound in sorted(rooms.inbound.items()):
        exported = inbound.session.export_at(inbound.session.first_known_index)
        if exported is None:
            continue
        out.append(
            {
                "algorithm": MEGOLM_ALGORITHM,
                "room_id": room_id,
                "session_id": session_id,
                "session_key": exported.to_base64(),
                "sender": inbound.sender,
                "sender_device": inbound.sender_device,
                "sender_key": sender_key,
                "sender_ed25519": inbound.sender_ed25519,
                "imported": inbound.imported,  # a key file's claim stays a claim on the new device
            }
        )
    return out


def import_room_keys(rooms: RoomSessions, keys: object) -> int:
    """File room keys handed over by the approving device (it vouches for their senders, as Olm would: the link
    channel is authenticated and the approver is this user's own device), except those it got from a key file
    or backup itself (`imported`, kept so); returns how many."""
    if not isinstance(keys, list):
        raise LinkError(LinkFailure.TAMPERED, "The room keys are not a list.")
    count = 0
    for item in keys:
        try:
            fields = {k: str(item[k]) for k in ("room_id", "session_id", "session_key", "sender", "sender_device")}
            fields |= {k: str(item[k]) for k in ("sender_key", "sender_ed25519")}
            session = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(fields["session_key"]))
        except (KeyError, TypeError, ValueError):
            continue  # one unreadable key costs that session's history, not the link
        if session.session_id != fields["session_id"] or item.get("algorithm") != MEGOLM_ALGORITHM:
            continue
        ref = (fields["room_id"], fields["session_id"], fields["sender_key"])
        existing = rooms.inbound.get(ref)
        if existing is not None and existing.session.first_known_index <= session.first_known_index:
            continue
        rooms.inbound[ref] = InboundSession(
            fields["room_id"],
            session,
            fields["sender"],
            fields["sender_device"],
            fields["sender_key"],
            fields["sender_ed25519"],
            imported=item.get("imported") is True,
        )
        rooms.dirty_inbound.add(ref)
        count += 1
    return count


__all__ = [
    "FAILURE_SENTENCES",
    "PAKE_SEQ",
    "Bound",
    "LinkChannel",
    "LinkCode",
    "LinkError",
    "check_new_device",
    "device_signed_keys",
    "export_room_keys",
    "failure",
    "import_room_keys",
    "relayed_failure",
]
