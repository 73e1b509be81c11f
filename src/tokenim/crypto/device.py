"""A device's identity: the user's master key (Ed25519, pyca) and the device's vodozemac `Account`.

Builds the signed objects the server publishes (master key, device keys, one-time keys) and signs
login challenges. Time comes in as an argument; nothing here reads a clock or touches a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import vodozemac

from tokenim.core.ids import DeviceId, UserId
from tokenim.core.limits import ONE_TIME_KEY_TARGET
from tokenim.core.signing import SigningKey, sign_json
from tokenim.protocol.auth import login_challenge_payload
from tokenim.protocol.keys import DEVICE_ALGORITHMS, ONE_TIME_KEY_ALGORITHM


class _DeviceSigner:
    """Adapts the vodozemac account to the `sign(bytes) -> str` shape `core.signing` expects."""

    def __init__(self, account: vodozemac.Account) -> None:
        self._account = account

    def sign(self, message: bytes) -> str:
        return str(self._account.sign(message).to_base64())


@dataclass(frozen=True, slots=True)
class KeyUpload:
    """One-time and fallback keys to publish, already signed by the device."""

    one_time_keys: dict[str, Any]
    fallback_keys: dict[str, Any]

    @property
    def empty(self) -> bool:
        return not self.one_time_keys and not self.fallback_keys


class DeviceIdentity:
    """The secrets of one device: its Olm account and (on the device that holds it) the user's master key."""

    def __init__(
        self,
        user_id: UserId,
        device_id: DeviceId,
        account: vodozemac.Account,
        master: SigningKey,
        master_version: int,
        master_created_at: int,
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.account = account
        self.master = master
        self.master_version = master_version
        self.master_created_at = master_created_at
        self._signer = _DeviceSigner(account)

    @classmethod
    def create(cls, user_id: UserId, device_id: DeviceId, now_ms: int, master: SigningKey | None = None) -> DeviceIdentity:
        """A brand-new device; with no `master` given, a new master key for a new account as well."""
        return cls(user_id, device_id, vodozemac.Account(), master or SigningKey.generate(), 1, now_ms)

    @property
    def ed25519(self) -> str:
        return str(self.account.ed25519_key.to_base64())

    @property
    def curve25519(self) -> str:
        return str(self.account.curve25519_key.to_base64())

    def sign(self, message: bytes) -> str:
        """Sign with the device's Ed25519 key."""
        return self._signer.sign(message)

    def master_key_object(self) -> dict[str, Any]:
        """The self-signed master-key object."""
        pub = self.master.public_key
        obj = {
            "user_id": self.user_id,
            "usage": ["master"],
            "keys": {f"ed25519:{pub}": pub},
            "version": self.master_version,
            "created_at": self.master_created_at,
        }
        return sign_json(obj, self.user_id, pub, self.master)

    def device_keys_object(self, created_at: int) -> dict[str, Any]:
        """The device-keys object, signed by the device and by the master key."""
        obj = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": list(DEVICE_ALGORITHMS),
            "keys": {f"curve25519:{self.device_id}": self.curve25519, f"ed25519:{self.device_id}": self.ed25519},
            "master_key_version": self.master_version,
            "created_at": created_at,
        }
        obj = sign_json(obj, self.user_id, self.device_id, self._signer)
        return sign_json(obj, self.user_id, self.master.public_key, self.master)

    def keys_to_upload(self, server_count: int, *, need_fallback: bool) -> KeyUpload:
        """Generate what is missing to reach the target number of published one-time keys.

        Keys generated earlier but not yet marked published are sent again (the server accepts
        repeats), so a lost response never loses keys.
        """
        missing = ONE_TIME_KEY_TARGET - server_count - len(self.account.one_time_keys)
        if missing > 0:
            self.account.generate_one_time_keys(missing)
        # The wheel has fallback keys; its .pyi stub does not list them (see shared/notes/vodozemac.md).
        if need_fallback and not self.account.fallback_key:  # type: ignore[attr-defined]
            self.account.generate_fallback_key()  # type: ignore[attr-defined]
        otks = {
            f"{ONE_TIME_KEY_ALGORITHM}:{kid}": sign_json({"key": key.to_base64()}, self.user_id, self.device_id, self._signer)
            for kid, key in self.account.one_time_keys.items()
        }
        fallback = {
            f"{ONE_TIME_KEY_ALGORITHM}:{kid}": sign_json(
                {"key": key.to_base64(), "fallback": True}, self.user_id, self.device_id, self._signer
            )
            for kid, key in self.account.fallback_key.items()  # type: ignore[attr-defined]
        }
        return KeyUpload(otks, fallback)

    def mark_keys_as_published(self) -> None:
        """Call once the server has acknowledged an upload."""
        self.account.mark_keys_as_published()

    def sign_login_challenge(self, *, server_name: str, nonce: str) -> str:
        """Answer a server's login challenge."""
        payload = login_challenge_payload(server_name=server_name, user_id=self.user_id, device_id=self.device_id, nonce=nonce)
        return self.sign(payload)

    def pickle_account(self, key: bytes) -> str:
        """The Olm account, encrypted by vodozemac under a 32-byte key."""
        return str(self.account.pickle(key))

    @staticmethod
    def unpickle_account(pickle: str, key: bytes) -> vodozemac.Account:
        return vodozemac.Account.from_pickle(pickle, key)
