"""Room keys in the Matrix key export format ("Key exports" in the Matrix client-server specification).

The file is `-----BEGIN MEGOLM SESSION DATA-----`, the base64 of

    0x01 | salt (16) | IV (16) | rounds (4, big-endian) | AES-256-CTR ciphertext | HMAC-SHA-256 (32)

then `-----END MEGOLM SESSION DATA-----`. PBKDF2-HMAC-SHA-512(passphrase, salt, rounds) gives 64 bytes:
the first 32 are the AES key, the last 32 the HMAC key; the HMAC covers everything before it. Bit 63 of
the IV is cleared (as matrix-rust-sdk and matrix-react-sdk do) so the CTR counter never wraps. The
plaintext is a JSON array of exported sessions: `algorithm`, `room_id`, `sender_key`, `session_id`,
`session_key` (exported at the first known index), `sender_claimed_keys` (`{"ed25519": …}`) and
`forwarding_curve25519_key_chain`; `algorithm` is Matrix's `m.megolm.v1.aes-sha2`. TokenIM adds
`org.tokenim.sender` and `org.tokenim.sender_device` (who sent the key), which other clients ignore.
Every primitive is pyca's; no clock, no file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

import vodozemac
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.megolm import InboundSession, RoomSessions
from tokenim.protocol.keys import MEGOLM_ALGORITHM

HEADER = "-----BEGIN MEGOLM SESSION DATA-----"
FOOTER = "-----END MEGOLM SESSION DATA-----"
VERSION = 1
ROUNDS = 500_000  # what Element writes; OWASP asks at least 210,000 for PBKDF2-HMAC-SHA-512
MAX_ROUNDS = 10_000_000  # a file asking for more would take minutes to open: refused unread
SENDER, SENDER_DEVICE = "org.tokenim.sender", "org.tokenim.sender_device"
# TokenIM names its Megolm "tokenim.megolm.v1.aes-sha2" on the wire; it is Matrix's Megolm v1, so files carry
# Matrix's name (other tools read them) and both names are accepted.
MATRIX_MEGOLM = "m.megolm.v1.aes-sha2"
_HEAD = 1 + 16 + 16 + 4
_MAC = 32


@dataclass(frozen=True, slots=True)
class ExportedSession:
    """One Megolm session as the export format carries it (with TokenIM's sender fields, when known)."""

    room_id: str
    sender_key: str
    session_id: str
    session_key: str
    sender_ed25519: str
    sender: str | None = None
    sender_device: str | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "algorithm": MATRIX_MEGOLM,
            "room_id": self.room_id,
            "sender_key": self.sender_key,
            "session_id": self.session_id,
            "session_key": self.session_key,
            "sender_claimed_keys": {"ed25519": self.sender_ed25519},
            "forwarding_curve25519_key_chain": [],
        }
        if self.sender is not None and self.sender_device is not None:
            obj |= {SENDER: self.sender, SENDER_DEVICE: self.sender_device}
        return obj


def _keys(passphrase: str, salt: bytes, rounds: int) -> tuple[bytes, bytes]:
    derived = PBKDF2HMAC(algorithm=hashes.SHA512(), length=64, salt=salt, iterations=rounds).derive(passphrase.encode("utf-8"))
    return derived[:32], derived[32:]


def encrypt_export(
    sessions: list[ExportedSession],
    passphrase: str,
    *,
    rounds: int = ROUNDS,
    salt: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """The export file's bytes for `sessions` (`salt` and `iv` random unless a test gives them)."""
    salt = os.urandom(16) if salt is None else salt
    iv_int = int.from_bytes(os.urandom(16) if iv is None else iv, "big") & ~(1 << 63)
    iv = iv_int.to_bytes(16, "big")
    aes_key, mac_key = _keys(passphrase, salt, rounds)
    plaintext = json.dumps([s.to_json() for s in sessions], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    enc = Cipher(algorithms.AES(aes_key), modes.CTR(iv)).encryptor()
    body = bytes([VERSION]) + salt + iv + rounds.to_bytes(4, "big") + enc.update(plaintext) + enc.finalize()
    mac = HMAC(mac_key, hashes.SHA256())
    mac.update(body)
    encoded = base64.b64encode(body + mac.finalize()).decode("ascii")
    lines = [encoded[i : i + 96] for i in range(0, len(encoded), 96)]
    return ("\n".join([HEADER, *lines, FOOTER]) + "\n").encode("ascii")


def decrypt_export(data: bytes, passphrase: str) -> list[dict[str, Any]]:
    """The JSON array inside an export file, after its MAC is checked; `bad_key_file` for anything else."""
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _bad("it is not a room key export (MEGOLM SESSION DATA)") from None
    if not (text.startswith(HEADER) and text.endswith(FOOTER)):
        raise _bad("it is not a room key export (MEGOLM SESSION DATA), or it is cut short")
    body = "".join(line.strip() for line in text.splitlines()[1:-1])
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _bad("its contents are damaged (not base64)") from None
    if len(raw) < _HEAD + _MAC:
        raise _bad("it is cut short")
    if raw[0] != VERSION:
        raise _bad(f"it uses format version {raw[0]}, and only version {VERSION} is known")
    salt, iv, rounds = raw[1:17], raw[17:33], int.from_bytes(raw[33:37], "big")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise _bad(f"it asks for {rounds:,} key derivation rounds (at most {MAX_ROUNDS:,} are accepted)")
    aes_key, mac_key = _keys(passphrase, salt, rounds)
    mac = HMAC(mac_key, hashes.SHA256())
    mac.update(raw[:-_MAC])
    try:
        mac.verify(raw[-_MAC:])
    except InvalidSignature:
        raise _bad("the passphrase is wrong, or the file was changed or damaged") from None
    dec = Cipher(algorithms.AES(aes_key), modes.CTR(iv)).decryptor()
    plaintext = dec.update(raw[_HEAD:-_MAC]) + dec.finalize()
    try:
        entries = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("its decrypted contents are not JSON") from None
    if not isinstance(entries, list):
        raise _bad("its decrypted contents are not a list of room keys")
    return [e for e in entries if isinstance(e, dict)]


def parse_entry(entry: dict[str, Any]) -> ExportedSession | None:
    """One exported session, or None if it is not a Megolm session this client can use."""
    if entry.get("algorithm") not in (MATRIX_MEGOLM, MEGOLM_ALGORITHM):
        return None
    fields = [entry.get(k) for k in ("room_id", "sender_key", "session_id", "session_key")]
    claimed = entry.get("sender_claimed_keys")
    ed25519 = claimed.get("ed25519") if isinstance(claimed, dict) else None
    sender, device = entry.get(SENDER), entry.get(SENDER_DEVICE)
    if not all(isinstance(f, str) and f for f in [*fields, ed25519]):
        return None
    if not (isinstance(sender, str) and isinstance(device, str)):
        sender = device = None
    room_id, sender_key, session_id, session_key = (str(f) for f in fields)
    return ExportedSession(room_id, sender_key, session_id, session_key, str(ed25519), sender, device)


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """What an import did: sessions added (or improved), already held as well or better, and unusable."""

    imported: int
    already_held: int
    unusable: int


def export_sessions(rooms: RoomSessions) -> list[ExportedSession]:
    """Every inbound Megolm session the device holds, each exported at its first known index."""
    out = []
    for inbound in rooms.inbound.values():
        exported = inbound.session.export_at(inbound.session.first_known_index)
        if exported is None:  # cannot happen at the first known index; never write a session we can't
            continue
        out.append(
            ExportedSession(
                inbound.room_id,
                inbound.sender_key,
                inbound.session.session_id,
                exported.to_base64(),
                inbound.sender_ed25519,
                inbound.sender,
                inbound.sender_device,
            )
        )
    return sorted(out, key=lambda s: (s.room_id, s.session_id, s.sender_key))


def import_sessions(rooms: RoomSessions, sessions: list[ExportedSession | None]) -> ImportCounts:
    """Add the sessions to `rooms`, marked imported; a session already held from an earlier or equal index is
    kept (never downgraded). A session whose key does not match its id, or with no sender, is unusable."""
    imported = held = unusable = 0
    for s in sessions:
        if s is None or s.sender is None or s.sender_device is None:
            unusable += 1
            continue
        try:
            session = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(s.session_key))
        except (ValueError, TypeError):
            unusable += 1
            continue
        if session.session_id != s.session_id:
            unusable += 1
            continue
        inbound = InboundSession(s.room_id, session, s.sender, s.sender_device, s.sender_key, s.sender_ed25519, imported=True)
        if rooms.import_inbound(inbound):
            imported += 1
        else:
            held += 1
    return ImportCounts(imported, held, unusable)


def _bad(reason: str) -> TokenIMError:
    return TokenIMError(ErrorCode.BAD_KEY_FILE, f"The room key file can't be used: {reason}. Nothing was imported.")


__all__ = [
    "FOOTER",
    "HEADER",
    "ROUNDS",
    "ExportedSession",
    "ImportCounts",
    "decrypt_export",
    "encrypt_export",
    "export_sessions",
    "import_sessions",
    "parse_entry",
]
