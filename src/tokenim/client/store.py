"""The encrypted local profile: one SQLite file holding the device's keys and session state.

Private material is encrypted with AES-256-GCM under a random data key; the data key is wrapped by
a key derived from the user's passphrase with Argon2id, whose parameters are stored beside it.
Changing the passphrase only rewraps the data key.

Record names (room ids, contacts' user ids, session and event ids) are metadata too: a record is
filed under HMAC-SHA256 tags of its kind and name (keyed by a subkey of the data key), and its real
kind and name travel inside its ciphertext. Lookups recompute the tags.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tokenim.core.errors import ErrorCode, TokenIMError

PROFILE_FILE = "profile.db"
RECORDS_FORMAT = "hmac-names-1"  # meta `records_format`: absent in profiles whose record names are readable
LOCK_FILE = "profile.lock"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, name TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, PRIMARY KEY (kind, name)
);
"""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters (RFC 9106's second recommended set by default: 64 MiB, 3 passes)."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4
    salt_hex: str = ""

    def derive(self, passphrase: str) -> bytes:
        return hash_secret_raw(
            passphrase.encode("utf-8"),
            bytes.fromhex(self.salt_hex),
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=32,
            type=Type.ID,
        )


# Bounds on what a profile may ask Argon2id for: a damaged (or planted) profile must not make the CLI try to
# allocate terabytes or run for hours before it can even say the passphrase is wrong.
_KDF_BOUNDS = {"time_cost": (1, 64), "memory_kib": (8, 4 * 1024 * 1024), "parallelism": (1, 64)}


def _unlock_parameters(kdf_json: str, wrapped_json: str) -> tuple[KdfParams, bytes, bytes]:
    """The stored KDF settings and wrapped key, checked; ValueError/TypeError/KeyError when damaged."""
    raw = json.loads(kdf_json)
    params = KdfParams(**raw)
    for name, (low, high) in _KDF_BOUNDS.items():
        value = getattr(params, name)
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"{name} out of range")
    if len(bytes.fromhex(params.salt_hex)) < 8:
        raise ValueError("salt too short")
    wrapped = json.loads(wrapped_json)
    return params, bytes.fromhex(wrapped["nonce"]), bytes.fromhex(wrapped["ct"])


def _subkey(data_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tokenim-profile:" + purpose).derive(data_key)


class ProfileStore:
    """An unlocked profile. Create with `create`, open with `open`; both need the passphrase."""

    def __init__(self, path: Path, conn: sqlite3.Connection, data_key: bytes, lock: int) -> None:
        self.path = path
        self._lock = lock
        self._conn = conn
        self._aead = AESGCM(_subkey(data_key, b"secrets"))
        self._name_key = _subkey(data_key, b"record-names")
        self.pickle_key = _subkey(data_key, b"vodozemac-pickle")
        if self.get_meta("records_format") != RECORDS_FORMAT:
            self._hide_record_names()

    @staticmethod
    def db_path(profile_dir: Path) -> Path:
        return profile_dir / PROFILE_FILE

    @classmethod
    def exists(cls, profile_dir: Path) -> bool:
        return cls.db_path(profile_dir).exists()

    @classmethod
    def create(cls, profile_dir: Path, passphrase: str, kdf: KdfParams | None = None) -> ProfileStore:
        """Make a new profile (directory mode 700, file mode 600) locked by `passphrase`."""
        if not passphrase:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "The passphrase must not be empty.")
        path = cls.db_path(profile_dir)
        if path.exists():
            raise TokenIMError(ErrorCode.PROFILE_EXISTS, f"There is already a profile in {profile_dir}.")
        profile_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = cls._take_lock(profile_dir)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            os.close(lock)
            raise TokenIMError(ErrorCode.PROFILE_EXISTS, f"There is already a profile in {profile_dir}.") from None
        try:
            return cls._initialise(path, passphrase, kdf, lock)
        except BaseException:
            # Interrupted or failed half-way: leave nothing that looks like a profile, and no lock held.
            os.close(lock)
            for leftover in path.parent.glob(path.name + "*"):
                leftover.unlink(missing_ok=True)
            raise

    @classmethod
    def _initialise(cls, path: Path, passphrase: str, kdf: KdfParams | None, lock: int) -> ProfileStore:
        params = KdfParams(**{**asdict(kdf or KdfParams()), "salt_hex": os.urandom(16).hex()})
        data_key = AESGCM.generate_key(bit_length=256)
        kek = AESGCM(params.derive(passphrase))
        nonce = os.urandom(12)
        wrapped = kek.encrypt(nonce, data_key, b"tokenim-data-key")
        conn = cls._connect(path)
        with conn:
            conn.executemany(
                "INSERT INTO meta(name, value) VALUES (?, ?)",
                [("kdf", json.dumps(asdict(params))), ("wrapped_key", json.dumps({"nonce": nonce.hex(), "ct": wrapped.hex()}))],
            )
        return cls(path, conn, data_key, lock)

    @classmethod
    def open(cls, profile_dir: Path, passphrase: str) -> ProfileStore:
        """Unlock an existing profile; a wrong passphrase changes nothing and says so."""
        path = cls.db_path(profile_dir)
        if not path.exists():
            raise TokenIMError(ErrorCode.PROFILE_MISSING, f"There is no profile in {profile_dir}: register first.")
        lock = cls._take_lock(profile_dir)
        try:
            return cls._unlock(profile_dir, path, passphrase, lock)
        except sqlite3.DatabaseError:
            os.close(lock)
            raise TokenIMError(
                ErrorCode.PROFILE_MISSING, f"The profile in {profile_dir} is damaged or is not a TokenIM profile."
            ) from None
        except BaseException:
            os.close(lock)
            raise

    @classmethod
    def _unlock(cls, profile_dir: Path, path: Path, passphrase: str, lock: int) -> ProfileStore:
        conn = cls._connect(path)
        rows = dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('kdf', 'wrapped_key')").fetchall())
        if len(rows) != 2:
            conn.close()
            raise TokenIMError(ErrorCode.PROFILE_MISSING, f"The profile in {profile_dir} is incomplete or damaged.")
        try:
            params, nonce, wrapped = _unlock_parameters(rows["kdf"], rows["wrapped_key"])
        except (ValueError, TypeError, KeyError):  # json, fromhex, a missing or mistyped member
            conn.close()
            raise TokenIMError(
                ErrorCode.PROFILE_MISSING, f"The profile in {profile_dir} is damaged: its key settings are unreadable."
            ) from None
        try:
            data_key = AESGCM(params.derive(passphrase)).decrypt(nonce, wrapped, b"tokenim-data-key")
        except InvalidTag:
            conn.close()
            raise TokenIMError(ErrorCode.WRONG_PASSPHRASE, "The passphrase is wrong: the profile stays locked.") from None
        return cls(path, conn, data_key, lock)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.isolation_level = "DEFERRED"
        # WAL keeps a commit per sent message cheap. FULL: a commit is on disk before it returns, so ratchet
        # state saved before a message leaves survives power loss too, and no Megolm index is ever used twice.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Deleted rows (old sessions, readable names of an older profile) are overwritten, not left in free pages.
        conn.execute("PRAGMA secure_delete=ON")
        conn.executescript(_SCHEMA)
        return conn

    def location(self) -> str:
        """Where the profile file is (device, inode, path): it changes when the profile is copied, restored or moved."""
        st = self.path.stat()
        return f"{st.st_dev}:{st.st_ino}:{self.path.resolve()}"

    def close(self) -> None:
        self._conn.close()
        if self._lock >= 0:
            os.close(self._lock)  # releases the flock
            self._lock = -1

    @staticmethod
    def _take_lock(profile_dir: Path, wait_s: float = 3.0) -> int:
        """One process at a time per profile: two would each keep their own copy of the keys and ratchets
        and overwrite the other's. Waits briefly for a short command to finish, then says who is in the way."""
        fd = os.open(profile_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise TokenIMError(
                        ErrorCode.PROFILE_BUSY,
                        f"The profile in {profile_dir} is in use by another tokenim process (is `tokenim listen` running?).",
                    ) from None
                time.sleep(0.05)

    def get_meta(self, name: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: dict[str, str]) -> None:
        """Store non-secret facts (server URL, user and device ids) in one transaction."""
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", list(values.items()))

    def get_secret(self, name: str) -> bytes | None:
        row = self._conn.execute("SELECT nonce, ciphertext FROM secrets WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return self._aead.decrypt(row[0], row[1], name.encode())

    def set_secrets(self, values: dict[str, bytes | None]) -> None:
        """Encrypt and store (or, for None, delete) secrets in one transaction."""
        self.save(secrets=values)

    def put_records(self, records: dict[str, dict[str, bytes | None]]) -> None:
        """Encrypt and store (None: delete) crypto-state records, all in one transaction."""
        self.save(records=records)

    def save(
        self,
        *,
        secrets: dict[str, bytes | None] | None = None,
        records: dict[str, dict[str, bytes | None]] | None = None,
        meta: dict[str, str] | None = None,
    ) -> None:
        """Secrets, records and meta in ONE transaction: e.g. an Olm account whose one-time key was used, and the
        session made from it, are stored together or not at all; so are a ratchet's advance and the send number."""
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", list((meta or {}).items()))
            for name, value in (secrets or {}).items():
                if value is None:
                    self._conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
                    continue
                nonce = os.urandom(12)
                self._conn.execute(
                    "INSERT OR REPLACE INTO secrets(name, nonce, ciphertext) VALUES (?, ?, ?)",
                    (name, nonce, self._aead.encrypt(nonce, value, name.encode())),
                )
            for kind, items in (records or {}).items():
                for name, item in items.items():
                    self._put_record(kind, name, item)

    def _tags(self, kind: str, name: str) -> tuple[str, str]:
        """The stored (kind, name) of a record: keyed hashes, so equal names still find each other."""
        kind_tag = hmac.new(self._name_key, b"kind\x00" + kind.encode(), hashlib.sha256).hexdigest()[:32]
        name_tag = hmac.new(self._name_key, f"name\x00{kind}\x00{name}".encode(), hashlib.sha256).hexdigest()
        return kind_tag, name_tag

    def _put_record(self, kind: str, name: str, item: bytes | None) -> None:
        kind_tag, name_tag = self._tags(kind, name)
        if item is None:
            self._conn.execute("DELETE FROM records WHERE kind = ? AND name = ?", (kind_tag, name_tag))
            return
        k, n = kind.encode(), name.encode()
        framed = len(k).to_bytes(2, "big") + k + len(n).to_bytes(2, "big") + n + item
        nonce = os.urandom(12)
        self._conn.execute(
            "INSERT OR REPLACE INTO records(kind, name, nonce, ciphertext) VALUES (?, ?, ?, ?)",
            (kind_tag, name_tag, nonce, self._aead.encrypt(nonce, framed, f"{kind_tag}\x00{name_tag}".encode())),
        )

    def _open_record(self, kind_tag: str, name_tag: str, nonce: bytes, ct: bytes) -> tuple[str, str, bytes]:
        framed = self._aead.decrypt(nonce, ct, f"{kind_tag}\x00{name_tag}".encode())
        klen = int.from_bytes(framed[:2], "big")
        kind = framed[2 : 2 + klen].decode()
        nlen = int.from_bytes(framed[2 + klen : 4 + klen], "big")
        name = framed[4 + klen : 4 + klen + nlen].decode()
        return kind, name, framed[4 + klen + nlen :]

    def get_record(self, kind: str, name: str) -> bytes | None:
        """One record by kind and name, decrypted; None if there is none."""
        kind_tag, name_tag = self._tags(kind, name)
        q = "SELECT nonce, ciphertext FROM records WHERE kind = ? AND name = ?"
        row = self._conn.execute(q, (kind_tag, name_tag)).fetchone()
        return None if row is None else self._open_record(kind_tag, name_tag, row[0], row[1])[2]

    def _hide_record_names(self) -> None:
        """Convert records of an older profile (readable kind and name, AAD "kind NUL name") in one transaction."""
        with self._conn:
            old = self._conn.execute("SELECT kind, name, nonce, ciphertext FROM records").fetchall()
            self._conn.execute("DELETE FROM records")
            for kind, name, nonce, ct in old:
                self._put_record(kind, name, self._aead.decrypt(nonce, ct, f"{kind}\x00{name}".encode()))
            self._conn.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('records_format', ?)", (RECORDS_FORMAT,))
        if old:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the old pages must not linger in the WAL

    def all_records(self) -> dict[str, dict[str, bytes]]:
        """Every stored record, decrypted, by kind."""
        out: dict[str, dict[str, bytes]] = {}
        for kind_tag, name_tag, nonce, ct in self._conn.execute("SELECT kind, name, nonce, ciphertext FROM records"):
            kind, name, item = self._open_record(kind_tag, name_tag, nonce, ct)
            out.setdefault(kind, {})[name] = item
        return out
