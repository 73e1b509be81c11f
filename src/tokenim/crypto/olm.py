"""Olm (1:1 double ratchet) between devices, used to carry room keys as to-device messages.

The payload inside each Olm message names sender and recipient and their signing keys, so a
recipient can check that the message really comes from the device it claims, for the user it
claims, and was meant for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import vodozemac

from tokenim.core.encoding import b64decode, b64encode
from tokenim.protocol.keys import OLM_ALGORITHM, DeviceKeys, OneTimeKey, verify_one_time_key


class CryptoError(Exception):
    """A message that cannot be decrypted or authenticated. `code` is stable, the text is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class OlmSessionRecord:
    sender_key: str
    session: vodozemac.Session


@dataclass(frozen=True, slots=True)
class OlmPayload:
    """A decrypted and authenticated to-device payload."""

    type: str
    content: dict[str, Any]
    sender: str
    sender_device: str
    sender_key: str


class OlmSessions:
    """This device's Olm sessions, by the peer's Curve25519 key (newest first)."""

    def __init__(self, account: vodozemac.Account, user_id: str, device_id: str) -> None:
        self._account = account
        self._user_id = user_id
        self._device_id = device_id
        self.by_key: dict[str, list[vodozemac.Session]] = {}
        self.dirty: set[str] = set()
        self.account_dirty = False

    @property
    def my_curve(self) -> str:
        return str(self._account.curve25519_key.to_base64())

    @property
    def my_ed(self) -> str:
        return str(self._account.ed25519_key.to_base64())

    def add(self, sender_key: str, session: vodozemac.Session) -> None:
        self.by_key.setdefault(sender_key, []).insert(0, session)
        self.dirty.add(session.session_id)

    def has_session(self, device: DeviceKeys) -> bool:
        return bool(self.by_key.get(device.curve25519))

    def create_outbound(self, device: DeviceKeys, otk: OneTimeKey) -> None:
        """Start a session with a device from a one-time key it signed (checked here)."""
        verify_one_time_key(otk, device)
        session = self._account.create_outbound_session(
            vodozemac.Curve25519PublicKey.from_base64(device.curve25519),
            vodozemac.Curve25519PublicKey.from_base64(otk.public_key),
        )
        self.add(device.curve25519, session)

    def encrypt(self, device: DeviceKeys, event_type: str, content: dict[str, Any]) -> dict[str, Any]:
        """Encrypt a to-device payload for `device` with the newest session."""
        session = self.by_key[device.curve25519][0]
        payload = {
            "type": event_type,
            "content": content,
            "sender": self._user_id,
            "sender_device": self._device_id,
            "keys": {"ed25519": self.my_ed},
            "recipient": device.user_id,
            "recipient_keys": {"ed25519": device.ed25519},
        }
        msg_type, body = session.encrypt(json.dumps(payload, separators=(",", ":")).encode()).to_parts()
        self.dirty.add(session.session_id)
        return {
            "algorithm": OLM_ALGORITHM,
            "sender_key": self.my_curve,
            "ciphertext": {device.curve25519: {"type": msg_type, "body": b64encode(body)}},
        }

    def decrypt(self, sender: str, content: dict[str, Any], sender_device: DeviceKeys | None) -> OlmPayload:
        """Decrypt and authenticate a to-device message; `sender_device` are the sender's verified keys."""
        if content.get("algorithm") != OLM_ALGORITHM:
            raise CryptoError("unknown_algorithm", "The message uses an unknown algorithm.")
        sender_key = content.get("sender_key")
        ours = content.get("ciphertext", {}).get(self.my_curve) if isinstance(content.get("ciphertext"), dict) else None
        if not isinstance(sender_key, str) or not isinstance(ours, dict):
            raise CryptoError("not_for_us", "The message was not encrypted for this device.")
        try:
            message = vodozemac.AnyOlmMessage.from_parts(int(ours["type"]), b64decode(ours["body"]))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise CryptoError("malformed", f"The Olm message is malformed: {type(exc).__name__}.") from None
        plaintext = self._decrypt_message(sender_key, message)
        try:
            payload = json.loads(plaintext)
        except (ValueError, RecursionError):
            raise CryptoError("malformed", "The decrypted payload is not JSON.") from None
        self._authenticate(payload, sender, sender_key, sender_device)
        return OlmPayload(payload["type"], payload["content"], sender, payload["sender_device"], sender_key)

    def _decrypt_message(self, sender_key: str, message: vodozemac.AnyOlmMessage) -> bytes:
        sessions = self.by_key.get(sender_key, [])
        pre_key = message.to_pre_key()
        for session in sessions:
            if pre_key is not None and not session.session_matches(pre_key):
                continue
            try:
                plaintext = bytes(session.decrypt(message))
            except ValueError:
                if pre_key is not None:
                    raise CryptoError("replayed", "This Olm message was already received (replay).") from None
                continue
            self.dirty.add(session.session_id)
            return plaintext
        if pre_key is None:
            raise CryptoError("no_session", "No Olm session can decrypt this message.")
        try:
            session, plaintext = self._account.create_inbound_session(
                vodozemac.Curve25519PublicKey.from_base64(sender_key), pre_key
            )
        except ValueError:
            raise CryptoError("replayed", "This Olm message uses a one-time key that was already used (replay).") from None
        self.account_dirty = True
        self.add(sender_key, session)
        return bytes(plaintext)

    def _authenticate(self, payload: Any, sender: str, sender_key: str, device: DeviceKeys | None) -> None:
        shape = {"content": dict, "type": str, "recipient_keys": dict, "keys": dict, "sender_device": str}
        if not isinstance(payload, dict) or any(not isinstance(payload.get(k), t) for k, t in shape.items()):
            raise CryptoError("malformed", "The decrypted payload is malformed.")
        if payload.get("recipient") != self._user_id or payload.get("recipient_keys", {}).get("ed25519") != self.my_ed:
            raise CryptoError("not_for_us", "The message was meant for another device.")
        if payload.get("sender") != sender:
            raise CryptoError("sender_mismatch", "The message claims another sender than the one who sent it.")
        if device is None or device.device_id != payload.get("sender_device") or device.user_id != sender:
            raise CryptoError("unknown_device", "The message comes from a device whose keys are unknown or unverified.")
        if device.curve25519 != sender_key or payload.get("keys", {}).get("ed25519") != device.ed25519:
            raise CryptoError("sender_mismatch", "The message's keys do not match the sender device's signed keys.")
