"""The key backup on the wire (docs/protocol.md, "Key backup"): a version's public metadata, its MACed
manifest and its encrypted entries. The server checks shapes and sizes only; it never sees a key."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.api import _Wire
from tokenim.protocol.wire import CANONICAL_B64_PATTERN, UnpaddedBase64

BACKUP_ALGORITHM = "tokenim.backup.v1.aes-hmac-sha2"
MAX_BACKUP_ENTRIES = 5000  # per backup version
MAX_ENTRIES_PER_UPLOAD = 50
MAX_ENTRY_CHARS = 2048  # one entry's ciphertext, base64
B64_PATTERN = r"^[A-Za-z0-9+/]*$"
ENTRY_ID_PATTERN = r"^[A-Za-z0-9+/]{43}$"  # HMAC-SHA256, unpadded base64
DIGEST_PATTERN = r"^[A-Za-z0-9+/]{43}$"


class BackupKdf(_Wire):
    """Argon2id parameters of a recovery passphrase (absent for a recovery key)."""

    algorithm: Literal["argon2id"]
    salt: str = Field(min_length=22, max_length=64, pattern=B64_PATTERN)
    time_cost: int = Field(ge=1, le=64)
    memory_kib: int = Field(ge=8, le=4 * 1024 * 1024)
    parallelism: int = Field(ge=1, le=64)


class BackupMetadata(_Wire):
    """A backup version's public metadata, written once when the version is created."""

    algorithm: Literal["tokenim.backup.v1.aes-hmac-sha2"]
    key_check: str = Field(pattern=DIGEST_PATTERN, description="HMAC-SHA256 that tells a wrong key apart")
    kdf: BackupKdf | None = Field(description="null for a recovery key; required (strict body)")


class BackupManifest(_Wire):
    """The MACed state of a version: its counter, how many entries and their digest. Opaque to the server,
    which checks only that it follows on from the stored one."""

    version: int = Field(ge=1, le=MAX_POSITION)
    counter: int = Field(ge=1, le=MAX_POSITION)
    count: int = Field(ge=0, le=MAX_POSITION, description=f"at most {MAX_BACKUP_ENTRIES} (too_many_keys)")
    digest: str = Field(pattern=DIGEST_PATTERN)
    mac: str = Field(pattern=DIGEST_PATTERN)


class BackupEntryJson(_Wire):
    entry_id: str = Field(pattern=ENTRY_ID_PATTERN)
    ciphertext: Annotated[str, UnpaddedBase64] = Field(min_length=1, max_length=MAX_ENTRY_CHARS, pattern=CANONICAL_B64_PATTERN)


class BackupCreateRequest(_Wire):
    metadata: BackupMetadata


class BackupCreateResponse(_Wire):
    version: int


class BackupInfoResponse(_Wire):
    """The current version: its metadata, its manifest (null before the first upload), how many entries."""

    version: int
    metadata: BackupMetadata
    manifest: BackupManifest | None
    count: int
    created_at: int
    updated_at: int


class BackupUploadRequest(_Wire):
    """Entries to add or replace, with the manifest that follows `expected_counter` (compare-and-swap)."""

    expected_counter: int = Field(ge=0, le=MAX_POSITION)
    manifest: BackupManifest
    entries: list[BackupEntryJson] = Field(max_length=MAX_ENTRIES_PER_UPLOAD)


class BackupUploadResponse(_Wire):
    counter: int
    count: int


class BackupKeysResponse(_Wire):
    """Every entry of a version, with the manifest they were stored under (read in one transaction)."""

    version: int
    manifest: BackupManifest | None
    entries: list[BackupEntryJson]
