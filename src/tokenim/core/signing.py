"""Ed25519 signatures over canonical JSON (pyca `cryptography`), and readable key fingerprints.

A signed object carries `"signatures": {user_id: {"ed25519:<key id>": <unpadded base64>}}`.
What is signed is the canonical JSON of the object without its `signatures` and `unsigned` members,
so several parties can sign the same object independently.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tokenim.core.canonical import canonical_json
from tokenim.core.encoding import b64decode, b64encode
from tokenim.core.errors import ErrorCode, TokenIMError


class SigningKey:
    """An Ed25519 private key (the user's master key lives in one of these on the client)."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Load the 32-byte private seed."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        """The 32-byte private seed: handle with care, store only encrypted."""
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())

    @property
    def public_key(self) -> str:
        """The public key as unpadded base64."""
        from cryptography.hazmat.primitives import serialization

        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return b64encode(raw)

    def sign(self, message: bytes) -> str:
        """Sign raw bytes; the signature as unpadded base64."""
        return b64encode(self._key.sign(message))

    @property
    def holds_private(self) -> bool:
        """Whether this is the private key (a `PublicMasterKey` is not)."""
        return True


def verify_ed25519(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    """True when `signature_b64` is a valid Ed25519 signature of `message` by `public_key_b64`."""
    try:
        key = Ed25519PublicKey.from_public_bytes(b64decode(public_key_b64))
        key.verify(b64decode(signature_b64), message)
    except (ValueError, InvalidSignature):
        return False
    return True


def signing_payload(obj: dict[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON without `signatures` and `unsigned`."""
    stripped = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    try:
        return canonical_json(stripped)
    except ValueError as exc:
        raise TokenIMError(ErrorCode.BAD_KEY_OBJECT, f"The object cannot be signed: {exc}.") from exc


def sign_json(obj: dict[str, Any], signer: str, key_id: str, sign: SigningKey | Any) -> dict[str, Any]:
    """Return a copy of `obj` with a signature by `signer`'s key `ed25519:<key_id>` added.

    `sign` is anything with a `sign(bytes) -> str` method (a SigningKey, or the crypto layer's device).
    """
    signed = copy.deepcopy(obj)
    signature = sign.sign(signing_payload(signed))
    signed.setdefault("signatures", {}).setdefault(signer, {})[f"ed25519:{key_id}"] = signature
    return signed


def get_signature(obj: dict[str, Any], signer: str, key_id: str) -> str | None:
    """The signature by `signer` with `ed25519:<key_id>`, if the object carries one."""
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        return None
    by_signer = sigs.get(signer)
    if not isinstance(by_signer, dict):
        return None
    sig = by_signer.get(f"ed25519:{key_id}")
    return sig if isinstance(sig, str) else None


def verify_json(obj: dict[str, Any], signer: str, key_id: str, public_key_b64: str, *, what: str) -> None:
    """Check `signer`'s signature with key `ed25519:<key_id>`; raise `bad_signature` naming `what` if it fails."""
    sig = get_signature(obj, signer, key_id)
    if sig is None:
        raise TokenIMError(ErrorCode.BAD_SIGNATURE, f"The {what} is not signed by {signer}'s key ed25519:{key_id}.")
    if not verify_ed25519(public_key_b64, signing_payload(obj), sig):
        raise TokenIMError(ErrorCode.BAD_SIGNATURE, f"The signature on the {what} does not verify.")


def fingerprint(public_key_b64: str) -> str:
    """A fingerprint people can read aloud: 12 groups of 5 digits from SHA-512 of the key.

    Each group is 5 bytes of the digest reduced modulo 100,000, as in Signal's safety numbers;
    together they carry about 199 bits.
    """
    digest = hashlib.sha512(b"tokenim-fingerprint-v1" + b64decode(public_key_b64)).digest()
    groups = [int.from_bytes(digest[i * 5 : i * 5 + 5], "big") % 100_000 for i in range(12)]
    return " ".join(f"{g:05d}" for g in groups)


class PublicMasterKey(SigningKey):
    """Only the public half of the user's master key: a device linked under the `signature_only` policy holds no
    private half, so anything that would sign with it is refused with a sentence instead."""

    __slots__ = ("_public",)

    def __init__(self, public_key: str) -> None:  # no private key to hand to SigningKey
        self._public = public_key

    @property
    def public_key(self) -> str:
        return self._public

    @property
    def holds_private(self) -> bool:
        return False

    def seed(self) -> bytes:
        raise TokenIMError(ErrorCode.FORBIDDEN, NO_MASTER_KEY)

    def sign(self, message: bytes) -> str:
        raise TokenIMError(ErrorCode.FORBIDDEN, NO_MASTER_KEY)


NO_MASTER_KEY = (
    "This device does not hold your master key (it was linked with the signature only): do this on a device that does."
)
