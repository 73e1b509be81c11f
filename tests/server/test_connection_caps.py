"""The total connection cap sits below the open-file limit, leaving room for the database and blobs;
a configured cap the limit cannot hold is refused at start with one clear line."""

from __future__ import annotations

import pytest

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.connections import reserved_files, resolve_max_connections


def test_the_cap_is_derived_from_the_open_file_limit() -> None:
    assert resolve_max_connections(0, 1024) == 1024 - 128
    assert resolve_max_connections(0, 256) == 256 - 64  # never fewer than 64 files kept back
    assert resolve_max_connections(100, 1024) == 100
    assert reserved_files(1 << 20) == (1 << 20) // 8


@pytest.mark.parametrize(("configured", "limit"), [(1000, 1024), (0, 60)])
def test_a_cap_the_limit_cannot_hold_is_a_bad_config(configured: int, limit: int) -> None:
    with pytest.raises(TokenIMError) as info:
        resolve_max_connections(configured, limit)
    assert info.value.code is ErrorCode.BAD_CONFIG and "ulimit -n" in info.value.message
