"""The server key and what it seals (server/secret_box.py): a value opens only under its key and purpose,
unchanged; the key file is made once, owner-only, and a key others may read, or of the wrong size, stops the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.secret_box import KEY_FILE, SecretBox, SecretBoxError


def test_a_sealed_value_opens_only_under_its_key_and_purpose_unchanged() -> None:
    box = SecretBox.generate()
    sealed = box.encrypt(b"code 493817", b"outbox:email")
    assert b"493817" not in sealed and box.decrypt(sealed, b"outbox:email") == b"code 493817"
    assert box.encrypt(b"code 493817", b"outbox:email") != sealed  # a fresh nonce each time
    for wrong in (
        lambda: box.decrypt(sealed, b"outbox:sms"),
        lambda: SecretBox.generate().decrypt(sealed, b"outbox:email"),
        lambda: box.decrypt(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"outbox:email"),
        lambda: box.decrypt(sealed[:10], b"outbox:email"),
        lambda: box.decrypt(b"\x02" + sealed[1:], b"outbox:email"),
    ):
        with pytest.raises(SecretBoxError):
            wrong()
    assert "key" in repr(box) and str(box._aead) not in repr(box)


def test_the_key_file_is_made_once_owner_only_and_refused_when_others_may_read_it(tmp_path: Path) -> None:
    first = SecretBox.from_data_dir(tmp_path)
    key_file = tmp_path / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left behind
    sealed = first.encrypt(b"x", b"p")
    assert SecretBox.from_data_dir(tmp_path).decrypt(sealed, b"p") == b"x"  # a restart reads the same key

    key_file.chmod(0o640)
    with pytest.raises(TokenIMError) as info:
        SecretBox.from_data_dir(tmp_path)
    assert info.value.code is ErrorCode.BAD_CONFIG and "chmod 600" in info.value.message
    key_file.chmod(0o600)
    key_file.write_bytes(b"short")
    with pytest.raises(TokenIMError) as info:
        SecretBox.from_data_dir(tmp_path)
    assert "32 bytes" in info.value.message
