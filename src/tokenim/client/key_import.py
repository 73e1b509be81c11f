"""A new device of an existing user, made from an exported master key (`tokenim keys import`).

Everything is checked before anything is made: the file and its passphrase, the server, and that the
key is the user's *current* master key (the server shows it, with its chain, in the challenge answer).
Only then is the profile created; if the server refuses the device, the new profile is removed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import vodozemac

from tokenim.client.account import _check_empty, _close, _need, _refused, _remove_profile, _sentence
from tokenim.client.state import DeviceState
from tokenim.client.store import KdfParams, ProfileStore
from tokenim.client.stores import Store
from tokenim.client.transport import CodeSource, Transport, call
from tokenim.client.two_factor import code_source
from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import make_user_id, new_device_id
from tokenim.core.signing import SigningKey, fingerprint
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.master_export import load_master_pem
from tokenim.protocol.api import HealthResponse, TokenResponse
from tokenim.protocol.identity import parse_rotation
from tokenim.protocol.key_lifecycle import MasterChallengeResponse, add_device_payload
from tokenim.protocol.keys import MasterKey, parse_master_key, verify_master_key

CHALLENGE_PATH = "/v1/devices/by_master_key/challenge"
ADD_PATH = "/v1/devices/by_master_key/add"


def check_current(master: SigningKey, challenge: MasterChallengeResponse, user_id: str) -> MasterKey:
    """The server's current master key for `user_id` if it is `master`; else `key_not_current`, saying
    whether the key was superseded by a rotation or is simply another key."""
    try:
        current = parse_master_key(challenge.master_key)
        verify_master_key(current)
        rotations = [parse_rotation(r) for r in challenge.rotations]
    except (TokenIMError, ValueError):
        raise TokenIMError(ErrorCode.BAD_RESPONSE, f"The server's master key for {user_id} does not verify.") from None
    if current.user_id != user_id:
        raise TokenIMError(ErrorCode.BAD_RESPONSE, f"The server answered with the master key of {current.user_id}.")
    mine = master.public_key
    if current.public_key == mine:
        return current
    old = next((r for r in rotations if r.old_key == mine), None)
    if old is not None:
        raise TokenIMError(
            ErrorCode.KEY_NOT_CURRENT,
            f"This is {user_id}'s old master key (version {old.old_version}): it was replaced by a rotation and the "
            f"current one is version {current.version}. Export the current key from a device that has it. "
            "Nothing was changed.",
        )
    raise TokenIMError(
        ErrorCode.KEY_NOT_CURRENT,
        f"This key (fingerprint {fingerprint(mine)}) is not {user_id}'s master key: check the user name and the file. "
        "Nothing was changed.",
    )


async def register_by_master_key(
    profile: Path | Store,
    passphrase: str | None,
    *,
    key_file: bytes,
    key_passphrase: str,
    server_url: str,
    username: str,
    clock: Clock,
    kdf: KdfParams | None,
    transport: httpx.AsyncBaseTransport | None,
    otp: str | CodeSource | None = None,
) -> tuple[DeviceState, Transport]:
    """Check the key file and that it holds `username`'s current master key, then make a profile with a new
    device signed by that key, add it to the account and keep its first tokens. With two-factor authentication
    on, the server asks for a code: one is taken from `otp` and the addition signed again on a new challenge
    (the first one was spent)."""
    _check_empty(profile)
    source = code_source(otp)
    master = load_master_pem(key_file, key_passphrase)
    http = httpx.AsyncClient(base_url=server_url.rstrip("/"), transport=transport, timeout=30.0)
    try:
        health = await call(http, "GET", "/health", HealthResponse)
        user_id = make_user_id(username, health.server_name)
        device_id = new_device_id()
        body = {"user_id": user_id, "device_id": device_id}
        challenge = await call(http, "POST", CHALLENGE_PATH, MasterChallengeResponse, body=body)
        if challenge.server_name != health.server_name:
            raise TokenIMError(ErrorCode.BAD_RESPONSE, f"The server calls itself {challenge.server_name}: refusing to sign.")
        current = check_current(master, challenge, user_id)
        store = ProfileStore.create(profile, _need(passphrase), kdf) if isinstance(profile, Path) else profile
    except BaseException:
        await http.aclose()
        raise
    conn = Transport(http, store)
    now = clock.now_ms()
    identity = DeviceIdentity(user_id, device_id, vodozemac.Account(), master, current.version, current.created_at)
    added = False
    try:
        state = DeviceState(store, identity, clock)
        meta = {"server_url": server_url, "server_name": health.server_name, "user_id": user_id, "device_id": device_id}
        meta |= {"master_key_version": str(current.version), "master_created_at": str(current.created_at)}
        store.set_meta(meta | {"device_created_at": str(now)})
        state.save_identity(master=True)
        upload = identity.keys_to_upload(0, need_fallback=True)
        state.save_identity()

        def request(nonce: str) -> dict[str, Any]:
            payload = add_device_payload(
                server_name=health.server_name,
                user_id=user_id,
                device_id=device_id,
                device_ed25519=identity.ed25519,
                nonce=nonce,
            )
            return {
                "user_id": user_id,
                "nonce": nonce,
                "signature": master.sign(payload),
                "device_keys": identity.device_keys_object(now),
                "one_time_keys": upload.one_time_keys,
                "fallback_keys": upload.fallback_keys,
            }

        try:
            tokens = await conn.post(ADD_PATH, request(challenge.nonce), TokenResponse, auth=False)
        except TokenIMError as err:
            if err.code is not ErrorCode.OTP_REQUIRED or source is None:
                raise
            code = await source()
            again = await call(http, "POST", CHALLENGE_PATH, MasterChallengeResponse, body=body)
            check_current(master, again, user_id)
            tokens = await conn.request("POST", ADD_PATH, TokenResponse, body=request(again.nonce), auth=False, otp=code)
        added = True
        conn.keep_tokens(tokens)
        identity.mark_keys_as_published()
        state.save_identity()
    except BaseException as exc:
        await _close(conn, store)
        if isinstance(profile, Path) and not added:
            # Refused, or the answer was lost: the profile holds nothing the key file does not (a device the
            # server may have added without answering never got its tokens here; `devices remove` ends it).
            _remove_profile(profile)
        if not added and isinstance(exc, Exception) and not _refused(exc):
            raise TokenIMError(
                ErrorCode.SERVER_UNREACHABLE,
                f"The new device may or may not have been added ({_sentence(exc)}); nothing was kept here: run the "
                "import again, and remove any device you don't recognise with `tokenim devices remove`.",
            ) from exc
        raise
    return state, conn


__all__ = ["check_current", "register_by_master_key"]
