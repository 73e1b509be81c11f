"""Server-side key backup, the crypto half: recovery keys, encrypting room keys for the backup, and the
authenticated manifest that lets a device catch a server that alters, swaps, drops or rolls back entries.

Symmetric (docs/protocol.md, "Key backup"): one 32-byte backup secret, shown to the person as a recovery
key or derived from a recovery passphrase with Argon2id, gives three keys by HKDF-SHA256: an AES-256-GCM
key for entries, an HMAC-SHA256 key for the manifest, and an HMAC-SHA256 key that names entries. Each
entry's ciphertext is bound (GCM associated data) to the backup version and its entry id, and the entry id
is derived from the room id, session id and sender key inside it. The manifest MACs the version, a counter
and a digest of every (entry id, ciphertext hash) pair. Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import base58
import vodozemac
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tokenim.core.canonical import canonical_json
from tokenim.core.encoding import b64decode, b64encode
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.megolm import InboundRef, InboundSession
from tokenim.protocol.backup import BACKUP_ALGORITHM

ALGORITHM = BACKUP_ALGORITHM
SECRET_BYTES = 32
# A recovery key is base58check (4-byte double-SHA-256 checksum) of these two bytes and the 32-byte secret.
RECOVERY_KEY_PREFIX = b"\x8b\x01"
NONCE_BYTES = 12
# Bounds on the Argon2id parameters a backup's public metadata may ask for: the metadata comes from the
# server, which must not make a device allocate terabytes or run for hours before saying "wrong passphrase".
KDF_BOUNDS = {"time_cost": (1, 64), "memory_kib": (8, 4 * 1024 * 1024), "parallelism": (1, 64)}
DEFAULT_KDF = {"time_cost": 3, "memory_kib": 64 * 1024, "parallelism": 4}
_KEY_CHECK_INPUT = b"tokenim.backup.v1 key check"

BAD_RECOVERY_KEY = "This is not a recovery key, or it has a typo: check it and type it again (nothing was sent)."
WRONG_RECOVERY_KEY = "The recovery key (or passphrase) does not open this backup: nothing was imported."
TAMPERED = "The key backup on the server failed its integrity check ({what}): nothing was imported."
ROLLED_BACK = (
    "The server presented an older key backup than this device last saw ({what}): it was refused and nothing was imported."
)


def tampered(what: str) -> TokenIMError:
    return TokenIMError(ErrorCode.BACKUP_TAMPERED, TAMPERED.format(what=what))


# ---- the secret ------------------------------------------------------------------------------


def new_secret() -> bytes:
    """A fresh random backup secret."""
    return os.urandom(SECRET_BYTES)


def encode_recovery_key(secret: bytes) -> str:
    """The secret as a person copies it: base58check, in groups of four characters."""
    text = base58.b58encode_check(RECOVERY_KEY_PREFIX + secret).decode("ascii")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def decode_recovery_key(text: str) -> bytes:
    """The secret from a recovery key as typed (spaces and dashes ignored); a typo fails its checksum here,
    before anything reaches the network."""
    compact = "".join(c for c in text if c not in " \t\r\n-")
    try:
        raw = base58.b58decode_check(compact.encode("ascii"))
    except ValueError:  # a character outside the alphabet, or a checksum mismatch
        raise TokenIMError(ErrorCode.BAD_RECOVERY_KEY, BAD_RECOVERY_KEY) from None
    if len(raw) != len(RECOVERY_KEY_PREFIX) + SECRET_BYTES or not raw.startswith(RECOVERY_KEY_PREFIX):
        raise TokenIMError(ErrorCode.BAD_RECOVERY_KEY, BAD_RECOVERY_KEY)
    return raw[len(RECOVERY_KEY_PREFIX) :]


@dataclass(frozen=True, slots=True)
class PassphraseKdf:
    """Argon2id parameters for a recovery passphrase; kept in the backup's public metadata."""

    salt: str
    time_cost: int
    memory_kib: int
    parallelism: int

    @classmethod
    def new(cls, time_cost: int | None = None, memory_kib: int | None = None, parallelism: int | None = None) -> PassphraseKdf:
        return cls(
            b64encode(os.urandom(16)),
            time_cost or DEFAULT_KDF["time_cost"],
            memory_kib or DEFAULT_KDF["memory_kib"],
            parallelism or DEFAULT_KDF["parallelism"],
        )

    @classmethod
    def from_json(cls, raw: object) -> PassphraseKdf:
        """Parameters as the server relays them, checked against the bounds before anything is derived."""
        if not isinstance(raw, dict) or set(raw) != {"algorithm", "salt", "time_cost", "memory_kib", "parallelism"}:
            raise tampered("its passphrase settings are malformed")
        if raw["algorithm"] != "argon2id":
            raise tampered("its passphrase settings name an unknown algorithm")
        for name, (low, high) in KDF_BOUNDS.items():
            value = raw[name]
            if type(value) is not int or not low <= value <= high:
                raise tampered(f"its passphrase setting {name} is out of bounds")
        try:
            if len(b64decode(raw["salt"])) < 16:
                raise ValueError("short salt")
        except ValueError:
            raise tampered("its passphrase salt is malformed") from None
        return cls(raw["salt"], raw["time_cost"], raw["memory_kib"], raw["parallelism"])

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": "argon2id", **asdict(self)}

    def derive(self, passphrase: str) -> bytes:
        """The backup secret from the passphrase (Argon2id, argon2-cffi's low-level API)."""
        return hash_secret_raw(
            passphrase.encode("utf-8"),
            b64decode(self.salt),
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=SECRET_BYTES,
            type=Type.ID,
        )


# ---- entries -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupEntry:
    """One Megolm inbound session as backed up: the exported key and who, per Olm, gave it."""

    room_id: str
    session_id: str
    sender: str
    sender_device: str
    sender_key: str
    sender_ed25519: str
    first_known_index: int
    session_key: str  # vodozemac ExportedSessionKey at first_known_index, base64

    @classmethod
    def from_session(cls, s: InboundSession) -> BackupEntry:
        index = s.session.first_known_index
        exported = s.session.export_at(index)
        assert exported is not None  # a session can always be exported at its first known index
        return cls(
            s.room_id,
            s.session.session_id,
            s.sender,
            s.sender_device,
            s.sender_key,
            s.sender_ed25519,
            index,
            exported.to_base64(),
        )

    def to_session(self) -> InboundSession:
        """The inbound session this entry holds; a key that is not the named session is refused."""
        try:
            session = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(self.session_key))
        except (ValueError, TypeError):
            raise tampered("an entry's room key is malformed") from None
        if session.session_id != self.session_id or session.first_known_index != self.first_known_index:
            raise tampered("an entry's room key is not the session it names")
        return InboundSession(self.room_id, session, self.sender, self.sender_device, self.sender_key, self.sender_ed25519)


@dataclass(frozen=True, slots=True)
class Manifest:
    """The MACed state of one backup version: which entries it holds (their digest), and a counter that
    grows with every upload."""

    version: int
    counter: int
    count: int
    digest: str
    mac: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object) -> Manifest:
        fields = {"version": int, "counter": int, "count": int, "digest": str, "mac": str}
        if not isinstance(raw, dict) or set(raw) != set(fields) or any(type(raw[k]) is not t for k, t in fields.items()):
            raise tampered("its manifest is malformed")
        return cls(**raw)


def ciphertext_hash(ciphertext: str) -> str:
    return hashlib.sha256(ciphertext.encode("ascii")).hexdigest()


def index_digest(index: dict[str, str]) -> str:
    """SHA-256 over every (entry id, ciphertext hash) pair, sorted: what the manifest vouches for."""
    return b64encode(hashlib.sha256(canonical_json(sorted([k, v] for k, v in index.items()))).digest())


class BackupKeys:
    """The keys one backup secret gives, and everything done with them."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise ValueError("a backup secret is 32 bytes")
        self._aead = AESGCM(self._subkey(secret, b"encrypt"))
        self._mac_key = self._subkey(secret, b"manifest")
        self._id_key = self._subkey(secret, b"entry-id")
        self._ids: dict[tuple[str, str, str], str] = {}  # computed once per session: checked after every send

    @staticmethod
    def _subkey(secret: bytes, purpose: bytes) -> bytes:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tokenim.backup.v1:" + purpose)
        return hkdf.derive(secret)

    def _mac(self, obj: dict[str, Any]) -> str:
        return b64encode(hmac.new(self._mac_key, canonical_json(obj), hashlib.sha256).digest())

    def key_check(self) -> str:
        """Public proof of the key, so a wrong recovery key is told apart from a tampered backup."""
        return b64encode(hmac.new(self._mac_key, _KEY_CHECK_INPUT, hashlib.sha256).digest())

    def check_key(self, key_check: object) -> None:
        if not isinstance(key_check, str) or not hmac.compare_digest(key_check, self.key_check()):
            raise TokenIMError(ErrorCode.WRONG_RECOVERY_KEY, WRONG_RECOVERY_KEY)

    def entry_id(self, room_id: str, session_id: str, sender_key: str) -> str:
        """The entry's opaque name on the server: keyed, so the server learns no room or session id."""
        ref = (room_id, session_id, sender_key)
        if ref not in self._ids:
            message = canonical_json([room_id, session_id, sender_key])
            self._ids[ref] = b64encode(hmac.new(self._id_key, message, hashlib.sha256).digest())
        return self._ids[ref]

    @staticmethod
    def _aad(version: int, entry_id: str) -> bytes:
        return canonical_json({"algorithm": ALGORITHM, "version": version, "entry_id": entry_id})

    def encrypt_entry(self, version: int, entry: BackupEntry) -> tuple[str, str]:
        """(entry id, ciphertext): base64 of nonce || AES-256-GCM(entry), bound to the version and entry id."""
        entry_id = self.entry_id(entry.room_id, entry.session_id, entry.sender_key)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, canonical_json(asdict(entry)), self._aad(version, entry_id))
        return entry_id, b64encode(nonce + sealed)

    def decrypt_entry(self, version: int, entry_id: str, ciphertext: str) -> BackupEntry:
        """An entry, only if it was written for this version under this name, and names itself the same."""
        try:
            raw = b64decode(ciphertext)
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(version, entry_id))
            entry = BackupEntry(**json.loads(plain))
        except (ValueError, TypeError, InvalidTag):
            raise tampered("an entry was altered, or moved from another backup version or entry") from None
        if self.entry_id(entry.room_id, entry.session_id, entry.sender_key) != entry_id:
            raise tampered("an entry was moved to another session's place")
        return entry

    def manifest(self, version: int, counter: int, index: dict[str, str]) -> Manifest:
        """A manifest for `index` (entry id -> ciphertext hash) at `counter`."""
        digest = index_digest(index)
        body = {"algorithm": ALGORITHM, "version": version, "counter": counter, "count": len(index), "digest": digest}
        return Manifest(version, counter, len(index), digest, self._mac(body))

    def verify_manifest(self, manifest: Manifest, version: int) -> None:
        """The manifest was made with these keys, for this version."""
        body = {
            "algorithm": ALGORITHM,
            "version": manifest.version,
            "counter": manifest.counter,
            "count": manifest.count,
            "digest": manifest.digest,
        }
        if not hmac.compare_digest(self._mac(body), manifest.mac):
            raise tampered("its manifest was altered")
        if manifest.version != version:
            raise tampered("its manifest belongs to another backup version")

    def verify_entries(self, manifest: Manifest, entries: dict[str, str]) -> list[BackupEntry]:
        """Every entry decrypted, after checking the set is exactly the one the manifest vouches for
        (nothing dropped, added or swapped)."""
        index = {entry_id: ciphertext_hash(ct) for entry_id, ct in entries.items()}
        if len(index) != manifest.count or index_digest(index) != manifest.digest:
            raise tampered("entries were dropped, added or replaced")
        return [self.decrypt_entry(manifest.version, entry_id, ct) for entry_id, ct in sorted(entries.items())]


def sessions_to_back_up(
    keys: BackupKeys, sessions: dict[InboundRef, InboundSession], backed_up: dict[str, int]
) -> list[InboundSession]:
    """The sessions the backup lacks, or holds only from a later index (`backed_up`: entry id -> first index)."""
    out = []
    for (room_id, session_id, sender_key), s in sorted(sessions.items()):
        first = backed_up.get(keys.entry_id(room_id, session_id, sender_key))
        if first is None or s.session.first_known_index < first:
            out.append(s)
    return out


@dataclass(frozen=True, slots=True)
class SeenState:
    """The newest backup state a device wrote or read: an older one is a rollback."""

    version: int
    counter: int
    digest: str


def check_not_older(seen: SeenState | None, version: int, manifest: Manifest | None) -> None:
    """Refuse a backup state older than the newest this device saw (or the same counter with other contents)."""
    if seen is None:
        return
    if version < seen.version:
        raise TokenIMError(
            ErrorCode.BACKUP_ROLLED_BACK, ROLLED_BACK.format(what=f"version {version}, this device saw version {seen.version}")
        )
    if version > seen.version:
        return
    counter = manifest.counter if manifest else 0
    if counter < seen.counter:
        raise TokenIMError(
            ErrorCode.BACKUP_ROLLED_BACK,
            ROLLED_BACK.format(what=f"upload {counter} of version {version}, this device saw upload {seen.counter}"),
        )
    if manifest is not None and counter == seen.counter and manifest.digest != seen.digest:
        raise tampered(f"upload {counter} of version {version} holds other entries than this device saw")


__all__ = [
    "ALGORITHM",
    "BackupEntry",
    "BackupKeys",
    "Manifest",
    "PassphraseKdf",
    "SeenState",
    "check_not_older",
    "ciphertext_hash",
    "decode_recovery_key",
    "encode_recovery_key",
    "index_digest",
    "new_secret",
    "sessions_to_back_up",
]
