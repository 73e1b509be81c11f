"""tokenim.crypto.device.DeviceIdentity: the signed key objects it publishes, one-time key top-ups,
login challenge signatures and pickling."""

from __future__ import annotations

import json
import os

import pytest
import vodozemac

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DeviceId, UserId
from tokenim.core.limits import ONE_TIME_KEY_TARGET
from tokenim.core.signing import SigningKey, verify_ed25519, verify_json
from tokenim.crypto.device import DeviceIdentity, KeyUpload
from tokenim.protocol.auth import login_challenge_payload
from tokenim.protocol.keys import (
    ONE_TIME_KEY_ALGORITHM,
    DeviceKeys,
    parse_device_keys,
    parse_master_key,
    parse_one_time_keys,
    verify_device_keys,
    verify_master_key,
    verify_one_time_key,
)

ALICE = UserId("@alice:example.com")
DEVICE = DeviceId("ALICEDEV01")
NOW = 1_800_000_000_000


@pytest.fixture
def identity() -> DeviceIdentity:
    return DeviceIdentity.create(ALICE, DEVICE, NOW)


def _device_keys(identity: DeviceIdentity) -> DeviceKeys:
    return parse_device_keys(identity.device_keys_object(NOW))


def _verified_otks(upload: KeyUpload, device: DeviceKeys) -> dict[str, str]:
    """Parse and verify every one-time key; key id -> public key."""
    otks = parse_one_time_keys(upload.one_time_keys, fallback=False)
    for otk in otks:
        verify_one_time_key(otk, device)
    return {o.key_id: o.public_key for o in otks}


def _verified_fallbacks(upload: KeyUpload, device: DeviceKeys) -> dict[str, str]:
    fbs = parse_one_time_keys(upload.fallback_keys, fallback=True)
    for fb in fbs:
        verify_one_time_key(fb, device)
    return {f.key_id: f.public_key for f in fbs}


# --- key objects --------------------------------------------------------------------------------


def test_master_key_object_parses_and_verifies(identity: DeviceIdentity) -> None:
    mk = parse_master_key(identity.master_key_object())
    verify_master_key(mk)
    assert mk.user_id == ALICE
    assert mk.public_key == identity.master.public_key
    assert mk.version == 1
    assert mk.created_at == NOW


def test_device_keys_object_parses_and_verifies(identity: DeviceIdentity) -> None:
    dk = parse_device_keys(identity.device_keys_object(NOW + 5))
    verify_device_keys(dk, parse_master_key(identity.master_key_object()))
    assert dk.user_id == ALICE
    assert dk.device_id == DEVICE
    assert dk.ed25519 == identity.ed25519 == identity.account.ed25519_key.to_base64()
    assert dk.curve25519 == identity.curve25519 == identity.account.curve25519_key.to_base64()
    assert dk.master_key_version == 1
    assert dk.created_at == NOW + 5


def test_device_keys_of_a_second_device_verify_under_the_same_master(identity: DeviceIdentity) -> None:
    second = DeviceIdentity.create(ALICE, DeviceId("ALICEDEV02"), NOW + 1000, master=identity.master)
    master = parse_master_key(identity.master_key_object())
    verify_device_keys(parse_device_keys(second.device_keys_object(NOW + 1000)), master)
    assert second.ed25519 != identity.ed25519
    # A device of another account (its own fresh master) is refused under Alice's master key.
    stranger = DeviceIdentity.create(ALICE, DeviceId("ALICEDEV03"), NOW)
    with pytest.raises(TokenIMError) as exc:
        verify_device_keys(parse_device_keys(stranger.device_keys_object(NOW)), master)
    assert exc.value.code is ErrorCode.BAD_SIGNATURE


def test_device_signature_is_made_by_the_vodozemac_account(identity: DeviceIdentity) -> None:
    sig = identity.sign(b"message")
    assert verify_ed25519(identity.ed25519, b"message", sig)
    # vodozemac agrees with pyca on the same signature.
    identity.account.ed25519_key.verify_signature(b"message", vodozemac.Ed25519Signature.from_base64(sig))
    assert not verify_ed25519(identity.master.public_key, b"message", sig)


# --- one-time keys ------------------------------------------------------------------------------


def test_keys_to_upload_reaches_the_target(identity: DeviceIdentity) -> None:
    upload = identity.keys_to_upload(0, need_fallback=False)
    assert not upload.empty
    otks = _verified_otks(upload, _device_keys(identity))
    assert len(otks) == ONE_TIME_KEY_TARGET
    assert len(set(otks.values())) == ONE_TIME_KEY_TARGET
    assert all(full_id.startswith(f"{ONE_TIME_KEY_ALGORITHM}:") for full_id in upload.one_time_keys)
    assert upload.fallback_keys == {}


def test_keys_to_upload_counts_what_the_server_already_has(identity: DeviceIdentity) -> None:
    upload = identity.keys_to_upload(ONE_TIME_KEY_TARGET - 7, need_fallback=False)
    assert len(_verified_otks(upload, _device_keys(identity))) == 7


def test_keys_to_upload_with_a_full_server_is_empty(identity: DeviceIdentity) -> None:
    assert identity.keys_to_upload(ONE_TIME_KEY_TARGET, need_fallback=False).empty
    assert identity.keys_to_upload(ONE_TIME_KEY_TARGET + 10, need_fallback=False).empty


def test_fallback_key_only_when_asked(identity: DeviceIdentity) -> None:
    device = _device_keys(identity)
    without = identity.keys_to_upload(ONE_TIME_KEY_TARGET, need_fallback=False)
    assert without.fallback_keys == {}
    with_fallback = identity.keys_to_upload(ONE_TIME_KEY_TARGET, need_fallback=True)
    assert with_fallback.one_time_keys == {}
    assert not with_fallback.empty
    fallbacks = _verified_fallbacks(with_fallback, device)
    assert len(fallbacks) == 1
    (fb_obj,) = with_fallback.fallback_keys.values()
    assert fb_obj["fallback"] is True


def test_keys_to_upload_is_idempotent_until_published(identity: DeviceIdentity) -> None:
    first = identity.keys_to_upload(0, need_fallback=True)
    again = identity.keys_to_upload(0, need_fallback=True)
    assert again.one_time_keys == first.one_time_keys
    assert again.fallback_keys == first.fallback_keys
    # Even when the server now reports the first upload arrived (the response was lost), the
    # same unpublished keys are offered again rather than new ones.
    after_lost_response = identity.keys_to_upload(ONE_TIME_KEY_TARGET, need_fallback=True)
    assert after_lost_response.one_time_keys == first.one_time_keys
    assert after_lost_response.fallback_keys == first.fallback_keys
    assert len(identity.account.one_time_keys) == ONE_TIME_KEY_TARGET


def test_after_publishing_only_the_missing_keys_are_generated(identity: DeviceIdentity) -> None:
    device = _device_keys(identity)
    first = _verified_otks(identity.keys_to_upload(0, need_fallback=True), device)
    identity.mark_keys_as_published()
    assert identity.account.one_time_keys == {}

    assert identity.keys_to_upload(ONE_TIME_KEY_TARGET, need_fallback=False).empty

    top_up = identity.keys_to_upload(ONE_TIME_KEY_TARGET - 3, need_fallback=False)
    new = _verified_otks(top_up, device)
    assert len(new) == 3
    assert top_up.fallback_keys == {}
    assert not set(new.values()) & set(first.values())
    assert not set(new) & set(first)


def test_fallback_key_is_replaced_after_publishing(identity: DeviceIdentity) -> None:
    device = _device_keys(identity)
    old = _verified_fallbacks(identity.keys_to_upload(ONE_TIME_KEY_TARGET, need_fallback=True), device)
    identity.mark_keys_as_published()
    new = _verified_fallbacks(identity.keys_to_upload(ONE_TIME_KEY_TARGET, need_fallback=True), device)
    assert len(new) == 1
    assert set(new.values()) != set(old.values())


def test_one_time_keys_do_not_verify_for_another_device(identity: DeviceIdentity) -> None:
    other = DeviceIdentity.create(ALICE, DeviceId("ALICEDEV02"), NOW, master=identity.master)
    otks = parse_one_time_keys(
        identity.keys_to_upload(ONE_TIME_KEY_TARGET - 1, need_fallback=False).one_time_keys, fallback=False
    )
    (otk,) = otks
    with pytest.raises(TokenIMError) as exc:
        verify_one_time_key(otk, _device_keys(other))
    assert exc.value.code is ErrorCode.BAD_SIGNATURE


# --- login --------------------------------------------------------------------------------------


def test_login_challenge_payload_is_the_documented_canonical_json() -> None:
    """docs/protocol.md, login by key, step 2: the exact bytes another implementation must sign."""
    payload = login_challenge_payload(server_name="example.com", user_id=ALICE, device_id=DEVICE, nonce="n0nce")
    expected = {"device_id": DEVICE, "nonce": "n0nce", "server_name": "example.com", "type": "tokenim.login.v1", "user_id": ALICE}
    assert payload == json.dumps(expected, separators=(",", ":")).encode()


def test_sign_login_challenge(identity: DeviceIdentity) -> None:
    sig = identity.sign_login_challenge(server_name="example.com", nonce="abc123")
    payload = login_challenge_payload(server_name="example.com", user_id=ALICE, device_id=DEVICE, nonce="abc123")
    assert verify_ed25519(identity.ed25519, payload, sig)
    other_server = login_challenge_payload(server_name="evil.example", user_id=ALICE, device_id=DEVICE, nonce="abc123")
    assert not verify_ed25519(identity.ed25519, other_server, sig)
    other_nonce = login_challenge_payload(server_name="example.com", user_id=ALICE, device_id=DEVICE, nonce="abc124")
    assert not verify_ed25519(identity.ed25519, other_nonce, sig)
    # The device key answers the challenge, not the master key.
    assert not verify_ed25519(identity.master.public_key, payload, sig)


# --- pickling -----------------------------------------------------------------------------------


def test_pickle_round_trip_keeps_the_keys(identity: DeviceIdentity) -> None:
    key = os.urandom(32)
    unpublished = identity.keys_to_upload(0, need_fallback=False)
    pickle = identity.pickle_account(key)
    assert isinstance(pickle, str)
    assert identity.ed25519 not in pickle

    account = DeviceIdentity.unpickle_account(pickle, key)
    restored = DeviceIdentity(ALICE, DEVICE, account, SigningKey.from_seed(identity.master.seed()), 1, NOW)
    assert restored.ed25519 == identity.ed25519
    assert restored.curve25519 == identity.curve25519
    assert restored.device_keys_object(NOW) == identity.device_keys_object(NOW)
    assert restored.master_key_object() == identity.master_key_object()
    # Unpublished one-time keys survive too, so a restart re-sends the same keys.
    assert restored.keys_to_upload(0, need_fallback=False).one_time_keys == unpublished.one_time_keys
    verify_device_keys(_device_keys(restored), parse_master_key(identity.master_key_object()))


def test_unpickle_with_the_wrong_key_raises(identity: DeviceIdentity) -> None:
    pickle = identity.pickle_account(os.urandom(32))
    with pytest.raises(vodozemac.PickleException):
        DeviceIdentity.unpickle_account(pickle, os.urandom(32))


def test_pickle_key_must_be_32_bytes(identity: DeviceIdentity) -> None:
    with pytest.raises(vodozemac.PickleException):
        identity.pickle_account(os.urandom(16))


def test_master_key_signature_checked_by_core(identity: DeviceIdentity) -> None:
    obj = identity.master_key_object()
    pub = identity.master.public_key
    verify_json(obj, ALICE, pub, pub, what="master key")
    obj["version"] = 2
    with pytest.raises(TokenIMError) as exc:
        verify_json(obj, ALICE, pub, pub, what="master key")
    assert exc.value.code is ErrorCode.BAD_SIGNATURE
