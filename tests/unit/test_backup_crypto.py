"""crypto/backup.py on its own: recovery keys, the passphrase KDF's bounds, entries bound to their version and
place, the manifest's MAC and digest, and the rollback rule."""

from __future__ import annotations

import dataclasses

import pytest
import vodozemac

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.backup import (
    BackupEntry,
    BackupKeys,
    Manifest,
    PassphraseKdf,
    SeenState,
    check_not_older,
    ciphertext_hash,
    decode_recovery_key,
    encode_recovery_key,
    new_secret,
    sessions_to_back_up,
)
from tokenim.crypto.megolm import InboundSession


def session(room: str = "!room:x") -> InboundSession:
    outbound = vodozemac.GroupSession()
    inbound = vodozemac.InboundGroupSession(outbound.session_key)
    return InboundSession(room, inbound, "@alice:x", "DEV", "curve" + room, "ed")


def code(exc: pytest.ExceptionInfo[TokenIMError]) -> ErrorCode:
    return exc.value.code


def test_a_recovery_key_round_trips_and_reads_as_typed() -> None:
    secret = new_secret()
    key = encode_recovery_key(secret)
    assert [len(g) for g in key.split(" ")] == [4] * 13
    assert decode_recovery_key(key) == secret
    assert decode_recovery_key(key.replace(" ", "-") + "\n") == secret
    assert decode_recovery_key(key.replace(" ", "")) == secret


def test_every_single_character_typo_is_caught() -> None:
    key = encode_recovery_key(new_secret()).replace(" ", "")
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    for i in range(len(key)):
        wrong = alphabet[(alphabet.index(key[i]) + 1) % len(alphabet)]
        with pytest.raises(TokenIMError) as err:
            decode_recovery_key(key[:i] + wrong + key[i + 1 :])
        assert code(err) is ErrorCode.BAD_RECOVERY_KEY
    for bad in ["", "0OIl", key[:-1], key + "2", "not a key at all"]:
        with pytest.raises(TokenIMError):
            decode_recovery_key(bad)


@pytest.mark.parametrize(
    "change",
    [
        {"memory_kib": 1 << 40},
        {"time_cost": 10_000},
        {"parallelism": 0},
        {"time_cost": "3"},
        {"salt": "AAAA"},
        {"salt": "not base64!"},
        {"algorithm": "scrypt"},
        {"extra": 1},
    ],
)
def test_passphrase_settings_from_the_server_are_checked_before_deriving(change: dict[str, object]) -> None:
    raw = PassphraseKdf.new(1, 8, 1).to_json() | change
    with pytest.raises(TokenIMError) as err:
        PassphraseKdf.from_json(raw)
    assert code(err) is ErrorCode.BACKUP_TAMPERED


def test_a_passphrase_derives_the_same_secret_from_the_same_settings() -> None:
    kdf = PassphraseKdf.new(1, 8, 1)
    again = PassphraseKdf.from_json(kdf.to_json())
    assert again.derive("pass phrase") == kdf.derive("pass phrase") != kdf.derive("other")


def test_an_entry_decrypts_only_under_its_version_and_its_own_name() -> None:
    keys = BackupKeys(new_secret())
    a, b = BackupEntry.from_session(session("!a:x")), BackupEntry.from_session(session("!b:x"))
    id_a, ct_a = keys.encrypt_entry(3, a)
    id_b, _ct_b = keys.encrypt_entry(3, b)
    assert keys.decrypt_entry(3, id_a, ct_a) == a
    assert keys.decrypt_entry(3, id_a, ct_a).to_session().session.session_id == a.session_id
    for version, entry_id in [(4, id_a), (3, id_b)]:
        with pytest.raises(TokenIMError) as err:
            keys.decrypt_entry(version, entry_id, ct_a)
        assert code(err) is ErrorCode.BACKUP_TAMPERED
    with pytest.raises(TokenIMError):
        BackupKeys(new_secret()).decrypt_entry(3, id_a, ct_a)


def test_an_entry_whose_key_is_not_the_session_it_names_is_refused() -> None:
    entry = BackupEntry.from_session(session())
    other = BackupEntry.from_session(session())
    with pytest.raises(TokenIMError) as err:
        dataclasses.replace(entry, session_key=other.session_key).to_session()
    assert code(err) is ErrorCode.BACKUP_TAMPERED


def test_the_manifest_vouches_for_exactly_its_entries() -> None:
    keys = BackupKeys(new_secret())
    entries = dict(keys.encrypt_entry(1, BackupEntry.from_session(session(f"!r{i}:x"))) for i in range(3))
    manifest = keys.manifest(1, 7, {k: ciphertext_hash(v) for k, v in entries.items()})
    keys.verify_manifest(manifest, 1)
    assert len(keys.verify_entries(manifest, entries)) == 3
    with pytest.raises(TokenIMError):
        keys.verify_manifest(manifest, 2)  # another version's manifest
    for forged in [dataclasses.replace(manifest, counter=8), dataclasses.replace(manifest, count=2)]:
        with pytest.raises(TokenIMError):
            keys.verify_manifest(forged, 1)
    with pytest.raises(TokenIMError):
        BackupKeys(new_secret()).verify_manifest(manifest, 1)
    first = next(iter(entries))
    for changed in [
        {k: v for k, v in entries.items() if k != first},
        entries | {first: entries[first][:-2] + "AA"},
    ]:
        with pytest.raises(TokenIMError) as err:
            keys.verify_entries(manifest, changed)
        assert code(err) is ErrorCode.BACKUP_TAMPERED


def test_a_manifest_must_have_exactly_its_fields() -> None:
    good = {"version": 1, "counter": 1, "count": 0, "digest": "x", "mac": "y"}
    assert Manifest.from_json(good).counter == 1
    for bad in [good | {"counter": "1"}, {k: v for k, v in good.items() if k != "mac"}, good | {"x": 1}, [], None]:
        with pytest.raises(TokenIMError):
            Manifest.from_json(bad)


def test_an_older_state_than_the_one_seen_is_a_rollback() -> None:
    seen = SeenState(version=2, counter=5, digest="d")
    m = Manifest(2, 5, 1, "d", "mac")
    check_not_older(None, 1, None)
    check_not_older(seen, 2, m)
    check_not_older(seen, 2, dataclasses.replace(m, counter=6, digest="e"))
    check_not_older(seen, 3, None)  # a newer version
    for version, manifest in [(1, m), (2, dataclasses.replace(m, counter=4)), (2, None)]:
        with pytest.raises(TokenIMError) as err:
            check_not_older(seen, version, manifest)
        assert code(err) is ErrorCode.BACKUP_ROLLED_BACK
    with pytest.raises(TokenIMError) as forked:
        check_not_older(seen, 2, dataclasses.replace(m, digest="other"))
    assert code(forked) is ErrorCode.BACKUP_TAMPERED


def test_a_session_is_backed_up_again_only_from_an_earlier_index() -> None:
    keys = BackupKeys(new_secret())
    s = session()
    ref = (s.room_id, s.session.session_id, s.sender_key)
    eid = keys.entry_id(*ref)
    assert sessions_to_back_up(keys, {ref: s}, {}) == [s]
    assert sessions_to_back_up(keys, {ref: s}, {eid: 0}) == []
    assert sessions_to_back_up(keys, {ref: s}, {eid: 3}) == [s]


def test_the_key_check_tells_a_wrong_key() -> None:
    keys = BackupKeys(new_secret())
    keys.check_key(keys.key_check())
    with pytest.raises(TokenIMError) as err:
        BackupKeys(new_secret()).check_key(keys.key_check())
    assert code(err) is ErrorCode.WRONG_RECOVERY_KEY
