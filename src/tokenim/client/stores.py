"""What the SDK keeps for a device, behind one small interface: the passphrase-encrypted profile on disk
(`ProfileStore`, client/store.py) for people, or `MemoryStore` for bots and tests that keep nothing on disk.

Every write goes through `save`, one transaction: a ratchet's advance and the send number that goes with
it, or a synced page's keys and its position, are stored together or not at all.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

Records = dict[str, dict[str, bytes | None]]


@runtime_checkable
class Store(Protocol):
    """Where a device's keys, tokens, crypto state and sync positions live."""

    @property
    def pickle_key(self) -> bytes:
        """The key that encrypts vodozemac pickles (sessions, the Olm account) inside the store."""
        ...

    def location(self) -> str:
        """Where the store is: it changes when a profile is copied or restored (forked-profile detection)."""
        ...

    def get_meta(self, name: str) -> str | None:
        """A non-secret fact (server URL, ids, positions), or None."""
        ...

    def set_meta(self, values: dict[str, str]) -> None:
        """Store non-secret facts, in one transaction."""
        ...

    def get_secret(self, name: str) -> bytes | None:
        """A secret (keys, tokens), or None."""
        ...

    def set_secrets(self, values: dict[str, bytes | None]) -> None:
        """Store secrets (None: delete), in one transaction."""
        ...

    def get_record(self, kind: str, name: str) -> bytes | None:
        """One crypto-state record, or None."""
        ...

    def all_records(self) -> dict[str, dict[str, bytes]]:
        """Every record, by kind."""
        ...

    def put_records(self, records: Records) -> None:
        """Store records (None: delete), in one transaction."""
        ...

    def save(
        self,
        *,
        secrets: dict[str, bytes | None] | None = None,
        records: Records | None = None,
        meta: dict[str, str] | None = None,
    ) -> None:
        """Secrets, records and meta in ONE transaction."""
        ...

    def close(self) -> None:
        """Release the store (a profile's file lock)."""
        ...


class MemoryStore:
    """A store that lives only as long as the process: for bots and tests. Nothing touches the disk, so
    there is no passphrase and no lock; `close` keeps the contents, so the same object can be opened again."""

    def __init__(self) -> None:
        self._pickle_key = os.urandom(32)
        self._location = f"memory:{os.urandom(8).hex()}"
        self._meta: dict[str, str] = {}
        self._secrets: dict[str, bytes] = {}
        self._records: dict[str, dict[str, bytes]] = {}
        self.saves = 0  # how many transactions were made: lets a test check an operation saves once

    @property
    def pickle_key(self) -> bytes:
        return self._pickle_key

    def location(self) -> str:
        return self._location

    def get_meta(self, name: str) -> str | None:
        return self._meta.get(name)

    def set_meta(self, values: dict[str, str]) -> None:
        self.save(meta=values)

    def get_secret(self, name: str) -> bytes | None:
        return self._secrets.get(name)

    def set_secrets(self, values: dict[str, bytes | None]) -> None:
        self.save(secrets=values)

    def get_record(self, kind: str, name: str) -> bytes | None:
        return self._records.get(kind, {}).get(name)

    def all_records(self) -> dict[str, dict[str, bytes]]:
        return {kind: dict(items) for kind, items in self._records.items() if items}

    def put_records(self, records: Records) -> None:
        self.save(records=records)

    def save(
        self,
        *,
        secrets: dict[str, bytes | None] | None = None,
        records: Records | None = None,
        meta: dict[str, str] | None = None,
    ) -> None:
        """Apply every change at once (nothing can fail half-way in memory)."""
        self.saves += 1
        self._meta.update(meta or {})
        for name, value in (secrets or {}).items():
            if value is None:
                self._secrets.pop(name, None)
            else:
                self._secrets[name] = value
        for kind, items in (records or {}).items():
            bucket = self._records.setdefault(kind, {})
            for name, item in items.items():
                if item is None:
                    bucket.pop(name, None)
                else:
                    bucket[name] = item

    def close(self) -> None:
        """Nothing to release: the contents stay for the next `Client.open`."""


__all__ = ["MemoryStore", "Records", "Store"]
