"""A failed create or open never leaves a profile locked or half-made."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FAST_KDF, PASSPHRASE
from tests.support import insides
from tokenim.client import Client, KdfParams, ProfileStore
from tokenim.core.clock import FakeClock
from tokenim.core.errors import TokenIMError


def test_a_failed_create_leaves_nothing_behind(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    with pytest.raises(Exception):  # noqa: B017 - argon2 refuses these parameters
        ProfileStore.create(profile, PASSPHRASE, KdfParams(time_cost=0, memory_kib=1, parallelism=1))
    assert not ProfileStore.exists(profile)
    store = ProfileStore.create(profile, PASSPHRASE, FAST_KDF)  # and nothing is left locked
    store.close()


async def test_a_damaged_profile_is_a_clear_error_and_stays_usable_for_retry(alice: Client, clock: FakeClock) -> None:
    path = insides(alice).store.path.parent
    insides(alice).store.put_records({"olm_session": {"x": b"{}"}})
    await alice.close()
    with pytest.raises(TokenIMError) as err:
        await Client.open(path, PASSPHRASE, clock=clock)
    assert err.value.code.value == "profile_missing" and "damaged" in err.value.message
    # The lock was released: opening the store itself works.
    ProfileStore.open(path, PASSPHRASE).close()
