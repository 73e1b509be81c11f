"""The server key and what it seals (server/secret_box.py, as branch twofa has it): a value opens only under its
key and purpose, unchanged; the key file is made once, owner-only, and a key others may read stops the server.
(Branch twofa's tests/unit/test_totp_and_secret_box.py covers the same box more fully: keep that one at merge.)"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.secret_box import KEY_BYTES, KEY_FILE_NAME, SecretBox


def test_a_sealed_value_opens_only_under_its_key_and_purpose_unchanged() -> None:
    box = SecretBox.from_key(secrets.token_bytes(KEY_BYTES))
    sealed = box.encrypt(b"code 493817", "outbox:email")
    assert b"493817" not in sealed and box.decrypt(sealed, "outbox:email") == b"code 493817"
    for wrong in (
        lambda: box.decrypt(sealed, "outbox:sms"),
        lambda: SecretBox.from_key(secrets.token_bytes(KEY_BYTES)).decrypt(sealed, "outbox:email"),
        lambda: box.decrypt(sealed[:-1] + bytes([sealed[-1] ^ 1]), "outbox:email"),
        lambda: box.decrypt(sealed[:10], "outbox:email"),
    ):
        with pytest.raises(TokenIMError) as info:
            wrong()
        assert info.value.code is ErrorCode.INTERNAL and "493817" not in info.value.message


def test_the_key_file_is_made_once_owner_only_and_refused_when_others_may_read_it(tmp_path: Path) -> None:
    key_file = tmp_path / KEY_FILE_NAME
    sealed = SecretBox.from_settings(key_file, {}).encrypt(b"x", "p")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert SecretBox.from_settings(key_file, {}).decrypt(sealed, "p") == b"x"  # a restart reads the same key
    key_file.chmod(0o640)
    with pytest.raises(TokenIMError) as info:
        SecretBox.from_settings(key_file, {}).ready()
    assert info.value.code is ErrorCode.BAD_CONFIG and "chmod 600" in info.value.message
