"""This user's master key over time, on this device: the key pending during a rotation (saved before the
request leaves, so a crash never loses a key the server may already have), settling it against the server's
chain, and how old the keys are (`tokenim keys status`).

A rotation saves the new private key as *pending* first, then asks the server. If the answer is lost (the
process dies, the connection drops), the next look at this user's own keys settles it: the server's current
master key is the pending one (the rotation happened: promote it), or still the old one (it did not: drop it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tokenim.client.state import DeviceState
from tokenim.core.signing import SigningKey, fingerprint
from tokenim.crypto.trust import Decision

PENDING_SEED = "master_seed_pending"
PENDING_VERSION = "master_pending_version"
PENDING_CREATED = "master_pending_created_at"
ROTATION_DAYS = "key_rotation_days"  # the server's setting, as last read (meta)
DEFAULT_ROTATION_DAYS = 365
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """A rotation done: the old and the new master key, by version and fingerprint, and the devices re-signed."""

    user_id: str
    old_version: int
    new_version: int
    old_fingerprint: str
    new_fingerprint: str
    devices: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """How old this user's master key and this device's key are, and when the master key is due for rotation.

    `outdated`: another device rotated the master key, so this one no longer holds the current one (it can
    neither rotate nor revoke). `due_in_days` is negative once the rotation is overdue."""

    user_id: str
    master_key_version: int
    master_fingerprint: str
    master_created_at: int
    master_age_days: int
    device_id: str
    device_created_at: int
    device_age_days: int
    key_rotation_days: int
    due_in_days: int
    due: bool
    outdated: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Lifecycle:
    """The pending master key of a rotation, and promoting or dropping it."""

    def __init__(self, state: DeviceState, on_rotated: Callable[[], None]) -> None:
        self._state = state
        self._on_rotated = on_rotated
        # The pending key as stored, read once: every look at this user's own keys asks for it.
        self._pending_read = False
        self._pending: tuple[SigningKey, int, int] | None = None

    def save_pending(self, key: SigningKey, version: int, created_at: int) -> None:
        """Keep the new key before the rotation is sent: whatever happens next, it is not lost."""
        meta = {PENDING_VERSION: str(version), PENDING_CREATED: str(created_at)}
        self._state.store.save(secrets={PENDING_SEED: key.seed()}, meta=meta)
        self._pending, self._pending_read = (key, version, created_at), True

    def pending(self) -> tuple[SigningKey, int, int] | None:
        """The pending key, its version and creation time, if a rotation was started and not settled."""
        if not self._pending_read:
            seed = self._state.store.get_secret(PENDING_SEED)
            version, created = self._state.store.get_meta(PENDING_VERSION), self._state.store.get_meta(PENDING_CREATED)
            if seed is not None and version and created:
                self._pending = SigningKey.from_seed(seed), int(version), int(created)
            self._pending_read = True
        return self._pending

    def drop_pending(self) -> None:
        """The rotation did not happen: forget the new key."""
        self._state.store.save(secrets={PENDING_SEED: None}, meta={PENDING_VERSION: "", PENDING_CREATED: ""})
        self._pending = None

    def promote(self, key: SigningKey, version: int, created_at: int) -> None:
        """The server holds `key` as the current master key: this device signs with it from now on. The key,
        its version and the pin that follows it are saved in one transaction."""
        identity = self._state.identity
        identity.master, identity.master_version, identity.master_created_at = key, version, created_at
        self._state.machine.follow_own_rotation(created_at)
        meta = {"master_key_version": str(version), "master_created_at": str(created_at)}
        meta |= {PENDING_VERSION: "", PENDING_CREATED: ""}
        self._state.persist(secrets={"master_seed": key.seed(), PENDING_SEED: None}, meta=meta)
        self._pending = None
        self._on_rotated()

    def settle_pending(self, own: Decision) -> None:
        """Given the trust decision on this user's own keys, finish or undo a rotation left pending."""
        pending = self.pending()
        if pending is None or own.pin is None or not own.verdict.trusted:
            return  # nothing pending, or the server's answer is not to be believed: decide later
        key, version, created = pending
        if own.pin.master_key == key.public_key:
            self.promote(key, version, created)
        else:  # the server never took it, or another rotation took that version: it can never become current
            self.drop_pending()

    def status(self, key_rotation_days: int) -> KeyStatus:
        """The age of the keys on this device's clock, against the server's rotation period."""
        identity, now = self._state.identity, self._state.clock.now_ms()
        created = identity.master_created_at
        device_created = int(self._state.store.get_meta("device_created_at") or 0)
        age = max(0, (now - created) // DAY_MS)
        due_in = key_rotation_days - age
        return KeyStatus(
            user_id=identity.user_id,
            master_key_version=identity.master_version,
            master_fingerprint=fingerprint(identity.master.public_key),
            master_created_at=created,
            master_age_days=age,
            device_id=identity.device_id,
            device_created_at=device_created,
            device_age_days=max(0, (now - device_created) // DAY_MS),
            key_rotation_days=key_rotation_days,
            due_in_days=due_in,
            due=due_in <= 0,
            outdated=self._state.machine.own_master_outdated,
        )


__all__ = ["DEFAULT_ROTATION_DAYS", "KeyRotation", "KeyStatus", "Lifecycle"]
