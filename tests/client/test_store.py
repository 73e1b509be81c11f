"""tokenim.client.store.ProfileStore: the passphrase-locked profile on disk."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag

from tokenim.client.store import PROFILE_FILE, KdfParams, ProfileStore
from tokenim.core.errors import ErrorCode, TokenIMError

FAST_KDF = KdfParams(time_cost=1, memory_kib=8192, parallelism=1)
PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    return tmp_path / "profile"


@pytest.fixture
def store(profile_dir: Path) -> Iterator[ProfileStore]:
    s = ProfileStore.create(profile_dir, PASSPHRASE, FAST_KDF)
    yield s
    s.close()


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _code(exc: pytest.ExceptionInfo[TokenIMError]) -> ErrorCode:
    return exc.value.code


def test_create_then_open_returns_secrets_and_records(profile_dir: Path) -> None:
    created = ProfileStore.create(profile_dir, PASSPHRASE, FAST_KDF)
    created.set_secrets({"master_seed": b"\x01" * 32, "token": b"access-token"})
    created.put_records({"olm_session": {"s1": b"session one", "s2": b"session two"}, "seen": {"x|0": b"$event"}})
    created.set_meta({"user_id": "@alice:example.com", "device_id": "ALICEDEV01"})
    pickle_key = created.pickle_key
    created.close()

    assert ProfileStore.exists(profile_dir)
    opened = ProfileStore.open(profile_dir, PASSPHRASE)
    try:
        assert opened.get_secret("master_seed") == b"\x01" * 32
        assert opened.get_secret("token") == b"access-token"
        assert opened.get_secret("never stored") is None
        assert opened.all_records() == {"olm_session": {"s1": b"session one", "s2": b"session two"}, "seen": {"x|0": b"$event"}}
        assert opened.get_meta("user_id") == "@alice:example.com"
        assert opened.get_meta("device_id") == "ALICEDEV01"
        assert opened.get_meta("nothing") is None
        # vodozemac pickles made before a restart must open after it.
        assert opened.pickle_key == pickle_key
        assert len(opened.pickle_key) == 32
    finally:
        opened.close()


def test_secrets_and_records_can_be_replaced_and_deleted(store: ProfileStore) -> None:
    store.set_secrets({"a": b"1", "b": b"2"})
    store.set_secrets({"a": b"one", "b": None})
    assert store.get_secret("a") == b"one"
    assert store.get_secret("b") is None
    store.put_records({"inbound": {"r1": b"first", "r2": b"second"}})
    store.put_records({"inbound": {"r1": None, "r2": b"changed"}})
    assert store.all_records() == {"inbound": {"r2": b"changed"}}


def test_wrong_passphrase_raises_and_leaves_the_file_byte_identical(profile_dir: Path) -> None:
    created = ProfileStore.create(profile_dir, PASSPHRASE, FAST_KDF)
    created.set_secrets({"master_seed": os.urandom(32)})
    created.close()
    before = _snapshot(profile_dir)
    assert PROFILE_FILE in before

    for wrong in ["correct horse battery stapler", "", PASSPHRASE.upper()]:
        with pytest.raises(TokenIMError) as exc:
            ProfileStore.open(profile_dir, wrong)
        assert _code(exc) is ErrorCode.WRONG_PASSPHRASE
        assert exc.value.status == 400
        assert _snapshot(profile_dir) == before

    # Still opens with the right passphrase afterwards.
    ProfileStore.open(profile_dir, PASSPHRASE).close()


def test_open_missing_profile(profile_dir: Path) -> None:
    assert not ProfileStore.exists(profile_dir)
    with pytest.raises(TokenIMError) as exc:
        ProfileStore.open(profile_dir, PASSPHRASE)
    assert _code(exc) is ErrorCode.PROFILE_MISSING
    assert not profile_dir.exists()


def test_open_damaged_profile(profile_dir: Path) -> None:
    created = ProfileStore.create(profile_dir, PASSPHRASE, FAST_KDF)
    created.close()
    conn = sqlite3.connect(ProfileStore.db_path(profile_dir))
    with conn:
        conn.execute("DELETE FROM meta WHERE name = 'wrapped_key'")
    conn.close()
    with pytest.raises(TokenIMError) as exc:
        ProfileStore.open(profile_dir, PASSPHRASE)
    assert _code(exc) is ErrorCode.PROFILE_MISSING


def test_creating_twice_fails_and_keeps_the_first(profile_dir: Path, store: ProfileStore) -> None:
    store.set_secrets({"master_seed": b"first"})
    before = ProfileStore.db_path(profile_dir).read_bytes()
    with pytest.raises(TokenIMError) as exc:
        ProfileStore.create(profile_dir, "another passphrase", FAST_KDF)
    assert _code(exc) is ErrorCode.PROFILE_EXISTS
    assert ProfileStore.db_path(profile_dir).read_bytes() == before
    store.close()
    with pytest.raises(TokenIMError) as wrong:
        ProfileStore.open(profile_dir, "another passphrase")
    assert _code(wrong) is ErrorCode.WRONG_PASSPHRASE


def test_one_process_at_a_time(profile_dir: Path, store: ProfileStore) -> None:
    """A second opener (e.g. `tokenim read` while `tokenim listen` runs) gets a clear error, not a fork of the keys."""
    import subprocess
    import sys

    code = f"""
import sys
from pathlib import Path
from tokenim.client.store import ProfileStore
from tokenim.core.errors import TokenIMError
from tests.support import insides
try:
    ProfileStore.open(Path({str(profile_dir)!r}), {PASSPHRASE!r})
except TokenIMError as err:
    print(err.code.value, err.message)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("profile_busy") and "another tokenim process" in out
    store.close()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out == ""


def test_empty_passphrase_is_refused(profile_dir: Path) -> None:
    with pytest.raises(TokenIMError) as exc:
        ProfileStore.create(profile_dir, "", FAST_KDF)
    assert _code(exc) is ErrorCode.INVALID_REQUEST
    assert not ProfileStore.exists(profile_dir)


def test_file_and_directory_modes(profile_dir: Path, store: ProfileStore) -> None:
    store.set_secrets({"token": b"x"})
    assert stat.S_IMODE(profile_dir.stat().st_mode) == 0o700
    files = list(profile_dir.iterdir())
    assert ProfileStore.db_path(profile_dir) in files
    # The database and its WAL/shared-memory companions: nobody else may read any of them.
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_file_mode_does_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        s = ProfileStore.create(tmp_path / "loose", PASSPHRASE, FAST_KDF)
        s.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "loose").stat().st_mode) == 0o700
    assert stat.S_IMODE(ProfileStore.db_path(tmp_path / "loose").stat().st_mode) == 0o600


def test_secrets_are_not_stored_in_clear(profile_dir: Path) -> None:
    secret = b"SECRET-MARKER-" + os.urandom(8).hex().encode()
    record = b"RECORD-MARKER-" + os.urandom(8).hex().encode()
    s = ProfileStore.create(profile_dir, PASSPHRASE, FAST_KDF)
    s.set_secrets({"master_seed": secret})
    s.put_records({"olm_session": {"s1": record}})
    pickle_key = s.pickle_key
    # While open, the data may sit in the write-ahead log: check every file.
    for name, data in _snapshot(profile_dir).items():
        assert secret not in data, name
        assert record not in data, name
        assert pickle_key not in data, name
    s.close()
    for name, data in _snapshot(profile_dir).items():
        assert secret not in data, name
        assert record not in data, name
        assert pickle_key not in data, name
        assert PASSPHRASE.encode() not in data, name
    reopened = ProfileStore.open(profile_dir, PASSPHRASE)
    try:
        assert reopened.get_secret("master_seed") == secret
        assert reopened.all_records()["olm_session"]["s1"] == record
    finally:
        reopened.close()


def test_a_secret_moved_to_another_name_does_not_decrypt(profile_dir: Path, store: ProfileStore) -> None:
    store.set_secrets({"master_seed": b"seed", "token": b"token"})
    conn = sqlite3.connect(ProfileStore.db_path(profile_dir))
    with conn:
        nonce, ct = conn.execute("SELECT nonce, ciphertext FROM secrets WHERE name = 'master_seed'").fetchone()
        conn.execute("UPDATE secrets SET nonce = ?, ciphertext = ? WHERE name = 'token'", (nonce, ct))
    conn.close()
    with pytest.raises(InvalidTag):
        store.get_secret("token")
    assert store.get_secret("master_seed") == b"seed"


def test_kdf_params_are_stored(profile_dir: Path, store: ProfileStore) -> None:
    kdf = json.loads(store.get_meta("kdf") or "null")
    assert kdf["time_cost"] == 1
    assert kdf["memory_kib"] == 8192
    assert kdf["parallelism"] == 1
    salt = bytes.fromhex(kdf["salt_hex"])
    assert len(salt) == 16
    # The stored parameters are what `open` uses: the profile opens without being told them.
    store.close()
    ProfileStore.open(profile_dir, PASSPHRASE).close()


def test_every_profile_gets_its_own_salt(tmp_path: Path) -> None:
    salts = set()
    for name in ("one", "two"):
        s = ProfileStore.create(tmp_path / name, PASSPHRASE, FAST_KDF)
        salts.add(json.loads(s.get_meta("kdf") or "{}")["salt_hex"])
        s.close()
    assert len(salts) == 2


def test_kdf_is_argon2id() -> None:
    params = KdfParams(time_cost=1, memory_kib=8192, parallelism=1, salt_hex="00" * 16)
    key = params.derive("pass")
    assert len(key) == 32
    argon2id = hash_secret_raw(b"pass", b"\0" * 16, time_cost=1, memory_cost=8192, parallelism=1, hash_len=32, type=Type.ID)
    argon2i = hash_secret_raw(b"pass", b"\0" * 16, time_cost=1, memory_cost=8192, parallelism=1, hash_len=32, type=Type.I)
    assert key == argon2id
    assert key != argon2i
    assert params.derive("pass ") != key


def test_default_kdf_params_are_strong(profile_dir: Path) -> None:
    defaults = KdfParams()
    assert defaults.memory_kib >= 64 * 1024
    assert defaults.time_cost >= 3
    assert defaults.parallelism >= 1
    s = ProfileStore.create(profile_dir, PASSPHRASE)
    try:
        kdf = json.loads(s.get_meta("kdf") or "{}")
    finally:
        s.close()
    assert kdf["memory_kib"] >= 64 * 1024
    assert kdf["time_cost"] >= 3
    assert kdf["parallelism"] == defaults.parallelism
    assert len(bytes.fromhex(kdf["salt_hex"])) == 16
