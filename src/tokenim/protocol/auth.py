"""Login by key: the exact bytes a device signs to answer a server's challenge."""

from __future__ import annotations

from tokenim.core.canonical import canonical_json

LOGIN_CHALLENGE_TYPE = "tokenim.login.v1"


def login_challenge_payload(*, server_name: str, user_id: str, device_id: str, nonce: str) -> bytes:
    """The canonical JSON a device signs to prove it holds its key.

    Binding the server name, user and device means a signature can't be replayed elsewhere.
    """
    return canonical_json(
        {"type": LOGIN_CHALLENGE_TYPE, "server_name": server_name, "user_id": user_id, "device_id": device_id, "nonce": nonce}
    )
