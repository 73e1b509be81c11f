"""A device whose master key another of the user's devices has since rotated ("outdated") refuses, before
anything happens, every operation that needs or hands out the current master key: it says so in one sentence
and points at a device that holds it, or at bringing the key here."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.client.test_key_lifecycle import second_device
from tests.client.test_verification import answer
from tests.support import insides
from tokenim.cli.account import _remove_device
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError

OUTDATED = "no longer holds your current master key (version 2"


def _refused(err: pytest.ExceptionInfo[TokenIMError]) -> None:
    assert err.value.code is ErrorCode.KEY_CHAIN_INVALID, err.value
    assert OUTDATED in err.value.message
    assert "`tokenim keys import` or `tokenim devices link`" in err.value.message


async def test_an_outdated_device_refuses_what_needs_the_current_master_key(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport, tmp_path: Path
) -> None:
    second = await second_device(alice, clock, transport)
    third = await second_device(alice, clock, transport)
    try:
        await alice.keys.rotate()
        # `second` has not looked since: each check asks the server first.
        assert second.keys.holds_current_master()
        out = tmp_path / "master.pem"
        with pytest.raises(TokenIMError) as export:
            await second.key_files.export_master_key(out, "a key file passphrase")
        _refused(export)
        assert not out.exists()
        with pytest.raises(TokenIMError) as verify:
            await second.verification.sas("@bob", answer(True, []), poll_interval=0.01)
        _refused(verify)
        with pytest.raises(TokenIMError) as approve:  # refused before the code is even claimed
            await second.linking.approve("K7QM2X-ABCD-EFGH", poll_interval=0.01)
        _refused(approve)
        # Removing another device could remove the only one holding the current key: refused unless forced.
        with pytest.raises(TokenIMError) as remove:
            await second.devices.remove(third.device_id)
        _refused(remove)
        with pytest.raises(TokenIMError) as cli_remove:
            await _remove_device(second, third.device_id, revoke_only=False)
        assert cli_remove.value.code is ErrorCode.KEY_CHAIN_INVALID
        assert "--force" in cli_remove.value.message and "only device" in cli_remove.value.message
        assert third.device_id in {d.device_id for d in (await alice.devices.all()).devices}
        forced = await _remove_device(second, third.device_id, revoke_only=False, force=True)
        assert forced == {"removed": third.device_id, "revoked": False}
        # The device holding the current key does all of these.
        await alice.key_files.export_master_key(out, "a key file passphrase")
        assert insides(alice).identity.master_version == 2
    finally:
        for c in (second, third):
            await c.close()
