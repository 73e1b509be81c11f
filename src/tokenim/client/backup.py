"""`client.backup`: back this device's room keys up to the server, encrypted here, and restore them on a new
device of the same user (docs/protocol.md, "Key backup").

The device that creates a backup, and every device that restores it, keeps the backup secret in its
encrypted profile and uploads new room keys as they arrive (after a send, after room keys are received),
in batches; a failure never fails the send or read, and what was not uploaded is retried next time. Each
device remembers the newest backup state it wrote or read and refuses an older one.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import Any

from tokenim.client.state import DeviceState
from tokenim.client.store import KdfParams
from tokenim.client.stores import Records
from tokenim.client.transport import Transport
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.backup import (
    ALGORITHM,
    BackupEntry,
    BackupKeys,
    Manifest,
    PassphraseKdf,
    SeenState,
    check_not_older,
    ciphertext_hash,
    decode_recovery_key,
    encode_recovery_key,
    index_digest,
    new_secret,
    sessions_to_back_up,
    tampered,
)
from tokenim.crypto.megolm import InboundSession
from tokenim.protocol.api import OkResponse
from tokenim.protocol.backup import (
    MAX_ENTRIES_PER_UPLOAD,
    BackupCreateResponse,
    BackupInfoResponse,
    BackupKeysResponse,
    BackupUploadResponse,
)

INDEX = "backup_index"  # record kind: entry id -> {"sha256": ciphertext hash, "first_index": n}
SECRET = "backup_secret"  # record kind, one record "secret": the 32-byte backup secret (encrypted at rest)
CONFLICT_RETRIES = 3
_SEEN = ("backup_version", "backup_counter", "backup_digest")
NOT_BACKING_UP = "This device does not back up room keys: run `tokenim backup create` or `tokenim backup restore`."


@dataclass(frozen=True, slots=True)
class BackupCreated:
    """A new backup version; `recovery_key` is shown once (None when made from a recovery passphrase). The
    recovery key is returned even when the first upload failed: the version exists and holds the keys later."""

    version: int
    recovery_key: str | None
    keys: int
    pending: int = 0  # room keys not uploaded yet (the server could not take them): they go up later

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BackupRestored:
    """What a restore brought in: `imported` room keys new to this device, of `keys` in the backup."""

    version: int
    keys: int
    imported: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BackupStatus:
    """Whether a backup exists, its version, how many keys, when last uploaded, whether this device backs up
    (and how many of its keys still wait for upload)."""

    exists: bool
    version: int | None
    keys: int
    last_uploaded_at: int | None
    backs_up: bool
    pending: int
    passphrase: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Backup:
    """`client.backup`: create, restore, status; and the quiet upload of new room keys."""

    def __init__(self, state: DeviceState, transport: Transport) -> None:
        self._state = state
        self._transport = transport
        self._index: dict[str, tuple[str, int]] | None = None  # entry id -> (ciphertext hash, first index)
        self._keys: tuple[bytes, BackupKeys] | None = None
        # The secret as the store holds it, read once: every send and every sync asks for it (`pending`), and
        # only this object writes it (the profile is one process's at a time).
        self._secret_read = False
        self._secret_held: bytes | None = None

    # ---- local state ---------------------------------------------------------------------------

    def _secret(self) -> bytes | None:
        if not self._secret_read:
            self._secret_held, self._secret_read = self._state.store.get_record(SECRET, "secret"), True
        return self._secret_held

    def _backup_keys(self, secret: bytes) -> BackupKeys:
        """The keys of `secret`, made once (they remember the entry ids they computed)."""
        # Both are this device's own (no timing oracle), but one rule for every secret keeps the audit simple.
        if self._keys is None or not hmac.compare_digest(self._keys[0], secret):
            self._keys = (secret, BackupKeys(secret))
        return self._keys[1]

    def _stop(self) -> None:
        """The version this device backed up to was replaced or deleted: forget its secret (the newest state
        seen stays, for rollback detection) until the person restores the current one."""
        self._state.persist(records={SECRET: {"secret": None}})
        self._keys, self._secret_held = None, None

    def _seen(self) -> SeenState | None:
        version, counter, digest = (self._state.store.get_meta(name) for name in _SEEN)
        if not version:
            return None
        return SeenState(int(version), int(counter or 0), digest or "")

    def _load_index(self) -> dict[str, tuple[str, int]]:
        if self._index is None:
            raw = self._state.store.all_records().get(INDEX, {})
            self._index = {}
            for eid, value in raw.items():
                d = json.loads(value)
                self._index[eid] = (str(d["sha256"]), int(d["first_index"]))
        return self._index

    def _save(self, *, version: int, counter: int, index: dict[str, tuple[str, int]], secret: bytes | None = None) -> None:
        """The new index, the newest state seen and (when given) the secret, with the crypto state: one transaction."""
        old = self._load_index()
        records: Records = {INDEX: {eid: None for eid in old if eid not in index}}
        records[INDEX].update(
            {eid: json.dumps({"sha256": h, "first_index": i}).encode() for eid, (h, i) in index.items() if old.get(eid) != (h, i)}
        )
        if secret is not None:
            records[SECRET] = {"secret": secret}
        digest = index_digest({eid: h for eid, (h, _i) in index.items()})
        self._state.persist(
            records=records, meta={"backup_version": str(version), "backup_counter": str(counter), "backup_digest": digest}
        )
        self._index = dict(index)
        if secret is not None:
            self._secret_held, self._secret_read = secret, True

    # ---- create --------------------------------------------------------------------------------

    async def create(
        self, passphrase: str | None = None, *, kdf: KdfParams | None = None, replace: bool = False
    ) -> BackupCreated:
        """Make a new backup version and upload every room key this device holds.

        When the server already has a backup it is refused (`backup_exists`) unless `replace`: the new version
        retires the old one, whose recovery key or passphrase stops working, and room keys only in it are lost.
        Without `passphrase` a random recovery key is made and returned: show it once. With it, the key is
        derived from the passphrase with Argon2id (`kdf`: its cost; a fresh salt is always made; the default
        is RFC 9106's second recommended set)."""
        if passphrase is not None and not passphrase:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "The recovery passphrase must not be empty.")
        if not replace:
            await self._refuse_existing()
        params = None
        if passphrase is not None:
            params = PassphraseKdf.new(kdf.time_cost, kdf.memory_kib, kdf.parallelism) if kdf else PassphraseKdf.new()
        secret = params.derive(passphrase) if params is not None and passphrase is not None else new_secret()
        keys = self._backup_keys(secret)
        metadata = {"algorithm": ALGORITHM, "key_check": keys.key_check(), "kdf": params.to_json() if params else None}
        created = await self._transport.post("/v1/backup", {"metadata": metadata}, BackupCreateResponse)
        seen = self._seen()
        if seen is not None and created.version <= seen.version:
            raise TokenIMError(
                ErrorCode.BACKUP_ROLLED_BACK,
                f"The server numbered the new backup {created.version}, not above version {seen.version} this device "
                "already saw: it was not used.",
            )
        self._save(version=created.version, counter=0, index={}, secret=secret)
        with contextlib.suppress(TokenIMError):  # the version exists and this device holds its secret: what
            await self._upload(keys, created.version, always=True)  # failed goes up after the next operation
        recovery_key = encode_recovery_key(secret) if params is None else None
        uploaded, pending = len(self._load_index()), len(self.pending())
        return BackupCreated(version=created.version, recovery_key=recovery_key, keys=uploaded, pending=pending)

    async def _refuse_existing(self) -> None:
        try:
            info = await self._transport.get("/v1/backup", BackupInfoResponse)
        except TokenIMError as err:
            if err.code is ErrorCode.NO_BACKUP:
                return
            raise
        raise TokenIMError(
            ErrorCode.BACKUP_EXISTS,
            f"You already have a key backup (version {info.version}, {info.count} room keys). A new one replaces it: "
            "its recovery key or passphrase stops working, and room keys only in it are lost. To do that, run "
            "`tokenim backup create --replace`; nothing was changed.",
        )

    # ---- upload --------------------------------------------------------------------------------

    def pending(self) -> list[InboundSession]:
        """Room keys this device holds that the backup lacks (none when this device does not back up)."""
        secret = self._secret()
        if secret is None:
            return []
        backed_up = {eid: first for eid, (_h, first) in self._load_index().items()}
        return sessions_to_back_up(self._backup_keys(secret), self._state.machine.rooms.inbound, backed_up)

    async def upload(self) -> int:
        """Upload the room keys the backup lacks, in batches; returns how many. Raises on any failure."""
        secret, seen = self._secret(), self._seen()
        if secret is None or seen is None:
            raise TokenIMError(ErrorCode.NO_BACKUP, NOT_BACKING_UP)
        try:
            return await self._upload(self._backup_keys(secret), seen.version)
        except TokenIMError as err:
            if err.code in (ErrorCode.BACKUP_OUTDATED, ErrorCode.NO_BACKUP):
                self._stop()
            raise

    async def upload_quietly(self) -> None:
        """`upload`, for after a send or a sync: never raises (what was not uploaded is retried next time)."""
        try:
            if self.pending():
                await self.upload()
        except TokenIMError:
            return

    async def _upload(self, keys: BackupKeys, version: int, *, always: bool = False) -> int:
        """Upload what is pending in batches (`always`: one upload even with nothing pending, so a new version
        gets its first manifest). Another device's upload in between is read, then this one is retried."""
        sessions, done, conflicts = self.pending(), 0, 0
        while sessions or always:
            batch = sessions[:MAX_ENTRIES_PER_UPLOAD]
            try:
                await self._put(keys, version, batch)
            except TokenIMError as err:
                conflicts += 1
                if err.code is not ErrorCode.BACKUP_CONFLICT or conflicts > CONFLICT_RETRIES:
                    raise
                await self._catch_up(keys, version)
                sessions, always = self.pending(), False
                continue
            always = False
            done += len(batch)
            sessions = sessions[MAX_ENTRIES_PER_UPLOAD:]
        return done

    async def _put(self, keys: BackupKeys, version: int, batch: list[InboundSession]) -> None:
        seen = self._seen()
        counter = seen.counter if seen is not None and seen.version == version else 0
        index = dict(self._load_index())
        entries = []
        for session in batch:
            entry_id, ciphertext = keys.encrypt_entry(version, BackupEntry.from_session(session))
            entries.append({"entry_id": entry_id, "ciphertext": ciphertext})
            index[entry_id] = (ciphertext_hash(ciphertext), session.session.first_known_index)
        manifest = keys.manifest(version, counter + 1, {eid: h for eid, (h, _i) in index.items()})
        body = {"expected_counter": counter, "manifest": manifest.to_json(), "entries": entries}
        await self._transport.request("PUT", f"/v1/backup/{version}/keys", BackupUploadResponse, body=body)
        self._save(version=version, counter=counter + 1, index=index)

    async def _catch_up(self, keys: BackupKeys, version: int) -> None:
        """Read the backup another device advanced, check it, and take its keys and state as this device's."""
        info = await self._transport.get("/v1/backup", BackupInfoResponse)
        if info.version != version:
            raise TokenIMError(ErrorCode.BACKUP_OUTDATED, f"Backup version {version} was replaced by version {info.version}.")
        await self._read_and_import(keys, info)

    # ---- restore -------------------------------------------------------------------------------

    async def restore(self, *, recovery_key: str | None = None, passphrase: str | None = None) -> BackupRestored:
        """Import every room key of the current backup, so history from before this device existed reads.

        A mistyped recovery key is refused before anything is sent. A wrong key, or a backup that was
        tampered with or is older than one this device saw, is refused and nothing is imported; afterwards
        this device backs up its new room keys too."""
        if (recovery_key is None) == (passphrase is None):
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "Give either the recovery key or the recovery passphrase.")
        secret = decode_recovery_key(recovery_key) if recovery_key is not None else None
        info = await self._transport.get("/v1/backup", BackupInfoResponse)
        if passphrase is not None:
            if info.metadata.kdf is None:
                raise TokenIMError(
                    ErrorCode.WRONG_RECOVERY_KEY, "This backup was made with a recovery key, not a passphrase: give the key."
                )
            secret = PassphraseKdf.from_json(info.metadata.kdf.model_dump(mode="json")).derive(passphrase)
        elif info.metadata.kdf is not None:
            raise TokenIMError(
                ErrorCode.WRONG_RECOVERY_KEY,
                "This backup was made with a recovery passphrase, not a recovery key: give the passphrase "
                "(`tokenim backup restore --passphrase`).",
            )
        assert secret is not None
        keys = self._backup_keys(secret)
        keys.check_key(info.metadata.key_check)
        total, imported = await self._read_and_import(keys, info, secret=secret)
        return BackupRestored(version=info.version, keys=total, imported=imported)

    async def _read_and_import(
        self, keys: BackupKeys, info: BackupInfoResponse, *, secret: bytes | None = None
    ) -> tuple[int, int]:
        """Download, check everything, and only then import: one transaction with the new seen state."""
        check_not_older(self._seen(), info.version, _manifest(info.manifest.model_dump() if info.manifest else None))
        got = await self._transport.get(f"/v1/backup/{info.version}/keys", BackupKeysResponse)
        raw = got.manifest.model_dump() if got.manifest else None
        manifest = _manifest(raw)
        check_not_older(self._seen(), got.version, manifest)
        entries = {e.entry_id: e.ciphertext for e in got.entries}
        if got.version != info.version:
            raise tampered("the entries came from another backup version")
        if manifest is None:
            if entries:
                raise tampered("it holds entries no manifest vouches for")
            self._save(version=info.version, counter=0, index={}, secret=secret)
            return 0, 0
        keys.verify_manifest(manifest, info.version)
        sessions = [entry.to_session() for entry in keys.verify_entries(manifest, entries)]
        rooms = self._state.machine.rooms
        imported = sum(1 for s in sessions if rooms.import_inbound(s))
        first = {keys.entry_id(s.room_id, s.session.session_id, s.sender_key): s.session.first_known_index for s in sessions}
        index = {eid: (ciphertext_hash(ct), first[eid]) for eid, ct in entries.items()}
        self._save(version=info.version, counter=manifest.counter, index=index, secret=secret)
        return len(sessions), imported

    async def delete(self) -> int:
        """Delete the current backup on the server (every device stops backing up to it); returns its version."""
        info = await self._transport.get("/v1/backup", BackupInfoResponse)
        await self._transport.request("DELETE", f"/v1/backup/{info.version}", OkResponse)
        self._stop()
        return info.version

    # ---- status --------------------------------------------------------------------------------

    async def status(self) -> BackupStatus:
        """The server's current backup and this device's part in it. A backup older than the newest this device
        saw, or one whose manifest fails its check, is refused as `restore` would refuse it."""
        try:
            info = await self._transport.get("/v1/backup", BackupInfoResponse)
        except TokenIMError as err:
            if err.code is not ErrorCode.NO_BACKUP:
                raise
            return BackupStatus(False, None, 0, None, False, 0, False)
        manifest = _manifest(info.manifest.model_dump() if info.manifest else None)
        check_not_older(self._seen(), info.version, manifest)
        secret, seen = self._secret(), self._seen()
        backs_up = secret is not None and seen is not None and seen.version == info.version
        if backs_up and secret is not None and manifest is not None:
            self._backup_keys(secret).verify_manifest(manifest, info.version)
        last = info.updated_at if manifest is not None else None
        pending = len(self.pending()) if backs_up else 0
        return BackupStatus(True, info.version, info.count, last, backs_up, pending, info.metadata.kdf is not None)


def _manifest(raw: dict[str, Any] | None) -> Manifest | None:
    return Manifest.from_json(raw) if raw is not None else None


__all__ = ["Backup", "BackupCreated", "BackupRestored", "BackupStatus"]
