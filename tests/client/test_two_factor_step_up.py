"""With two-factor authentication on, every guarded operation is refused without a code (`otp_required`,
nothing changed) and done with one, through the SDK as a program uses it (`client.two_factor.use_codes`):
adding, linking, removing and revoking a device, rotating and importing the master key, creating, restoring and
deleting a backup, and admin actions. Codes are computed independently of pyotp. Both databases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client.test_link import link_pair
from tests.conftest import FAST_KDF, PASSPHRASE
from tests.support import add_device, bearer, login_token
from tests.two_factor_kit import code, turn_on
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError

KEY_PASS = "tangerine lighthouse quarrel noodle"


async def needs_a_code(
    client: Client, clock: FakeClock, secret: str, action: Callable[[], Awaitable[Any]], unchanged: Callable[[], Awaitable[None]]
) -> Any:
    """`action` is refused without a code and changes nothing, then is done with a current one."""
    client.two_factor.use_codes(None)
    with pytest.raises(TokenIMError) as exc:
        await action()
    assert exc.value.code is ErrorCode.OTP_REQUIRED, exc.value
    await unchanged()
    client.two_factor.use_codes(code(secret, clock))
    result = await action()
    clock.advance(seconds=30)  # the code is spent: the next one is fresh
    client.two_factor.use_codes(None)
    return result


async def device_ids(client: Client) -> set[str]:
    return {d.device_id for d in (await client.devices.all()).devices}


async def test_devices_are_added_removed_and_revoked_only_with_a_code(
    alice: Client, clock: FakeClock, http: httpx.AsyncClient
) -> None:
    secret, _ = await turn_on(alice, clock)

    async def only_alice() -> None:
        assert await device_ids(alice) == {alice.device_id}

    second = await needs_a_code(alice, clock, secret, lambda: add_device(alice, clock), only_alice)
    await login_token(http, second)  # a device in use: removing it is not undoing an addition

    async def both() -> None:
        assert await device_ids(alice) == {alice.device_id, second.device_id}

    await needs_a_code(alice, clock, secret, lambda: alice.devices.remove(second.device_id), both)
    third = await needs_a_code(alice, clock, secret, lambda: add_device(alice, clock), only_alice)
    await login_token(http, third)

    async def third_kept() -> None:
        assert third.device_id in await device_ids(alice)

    revoked = await needs_a_code(alice, clock, secret, lambda: alice.keys.revoke(third.device_id), third_kept)
    assert revoked.device_id == third.device_id and await device_ids(alice) == {alice.device_id}


async def test_a_device_removes_itself_and_undoes_a_fresh_addition_without_a_code(
    alice: Client, clock: FakeClock, http: httpx.AsyncClient
) -> None:
    secret, _ = await turn_on(alice, clock)
    alice.two_factor.use_codes(code(secret, clock))
    fresh = await add_device(alice, clock)  # never logged in: what a link that failed half-way leaves
    alice.two_factor.use_codes(None)
    await alice.devices.remove(fresh.device_id)
    clock.advance(seconds=30)
    alice.two_factor.use_codes(code(secret, clock))
    leaving = await add_device(alice, clock)
    alice.two_factor.use_codes(None)
    token = await login_token(http, leaving)
    resp = await http.delete(f"/v1/devices/{leaving.device_id}", headers=bearer(token))  # itself
    assert resp.status_code == 200, resp.text
    clock.advance(seconds=30)
    alice.two_factor.use_codes(code(secret, clock))
    late = await add_device(alice, clock)
    alice.two_factor.use_codes(None)
    clock.advance(seconds=10 * 60)  # ten minutes on, never used: no longer an undo

    async def kept() -> None:
        assert late.device_id in await device_ids(alice)

    await needs_a_code(alice, clock, secret, lambda: alice.devices.remove(late.device_id), kept)


async def test_rotating_the_master_key_and_admin_actions_need_a_code(alice: Client, clock: FakeClock) -> None:
    secret, _ = await turn_on(alice, clock)

    async def version_1() -> None:
        assert (await alice.keys.status()).master_key_version == 1

    rotation = await needs_a_code(alice, clock, secret, alice.keys.rotate, version_1)
    assert rotation.new_version == 2

    async def no_invite() -> None:
        assert "invite.created" not in [e.event for e in (await alice.audit.events()).events]

    invite = await needs_a_code(alice, clock, secret, lambda: alice.admin.create_invite(3600), no_invite)
    assert invite.code


async def test_backups_are_made_restored_and_deleted_only_with_a_code(
    alice: Client, clock: FakeClock, tmp_path: Path, transport: httpx.ASGITransport
) -> None:
    secret, _ = await turn_on(alice, clock)

    async def none() -> None:
        assert not (await alice.backup.status()).exists

    created = await needs_a_code(alice, clock, secret, alice.backup.create, none)
    assert created.recovery_key
    await alice.key_files.export_master_key(tmp_path / "master.pem", KEY_PASS)

    async def importing(otp: str | None) -> Client:
        return await Client.import_master_key(
            tmp_path / "new",
            PASSPHRASE,
            key_file=(tmp_path / "master.pem").read_bytes(),
            key_passphrase=KEY_PASS,
            server_url="http://tokenim.test",
            username="alice",
            clock=clock,
            kdf=FAST_KDF,
            transport=transport,
            otp=otp,
        )

    with pytest.raises(TokenIMError) as exc:
        await importing(None)
    assert exc.value.code is ErrorCode.OTP_REQUIRED
    assert await device_ids(alice) == {alice.device_id} and not (tmp_path / "new").exists()
    async with await importing(code(secret, clock)) as laptop:
        clock.advance(seconds=30)
        assert await device_ids(alice) == {alice.device_id, laptop.device_id}

        async def nothing_restored() -> None:
            assert not (await laptop.backup.status()).backs_up

        await needs_a_code(
            laptop, clock, secret, lambda: laptop.backup.restore(recovery_key=created.recovery_key), nothing_restored
        )
        # The laptop now holds the backup: reading it again (as a device catching up with another's uploads) needs none.
        restored = await laptop.backup.restore(recovery_key=created.recovery_key)
        assert restored.version == created.version

    async def still_there() -> None:
        assert (await alice.backup.status()).exists

    assert await needs_a_code(alice, clock, secret, alice.backup.delete, still_there) == created.version


async def test_a_link_is_approved_only_with_a_code(
    alice: Client, clock: FakeClock, tmp_path: Path, transport: httpx.ASGITransport
) -> None:
    """The approving device adds the new one with the code; without one the link fails on both sides and leaves
    no device behind."""
    secret, _ = await turn_on(alice, clock)
    new, approval = await link_pair(alice, tmp_path / "refused", transport, clock)
    assert isinstance(approval, TokenIMError) and approval.code is ErrorCode.OTP_REQUIRED, approval
    assert isinstance(new, TokenIMError) and not (tmp_path / "refused").exists()
    assert await device_ids(alice) == {alice.device_id}
    alice.two_factor.use_codes(code(secret, clock))
    new, approval = await link_pair(alice, tmp_path / "linked", transport, clock)
    assert isinstance(new, Client), new
    await new.close()
    assert await device_ids(alice) == {alice.device_id, approval.device_id}
