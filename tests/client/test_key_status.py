"""How old the keys are, and the reminder to rotate: the server's `key_rotation_days` reaches the client
through whoami, is remembered in the profile, and every command reminds the user once the master key is due,
until it is rotated."""

from __future__ import annotations

import argparse

import httpx
import pytest

from tests.client.test_key_lifecycle import reopen
from tests.support import insides
from tokenim.cli.account import open_client, rotation_notice
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.server.config import ServerConfig
from tokenim.server.services.accounts import RegistrationMode


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(registration=RegistrationMode.OPEN, server_name="tokenim.test", key_rotation_days=30)


async def test_the_rotation_period_comes_from_the_server(
    alice: Client, clock: FakeClock, transport: httpx.AsyncBaseTransport
) -> None:
    assert (await alice.account.whoami()).key_rotation_days == 30
    status = await alice.keys.status()
    assert (status.key_rotation_days, status.master_key_version, status.master_age_days) == (30, 1, 0)
    assert (status.due_in_days, status.due, status.outdated) == (30, False, False)
    assert status.device_id == alice.device_id and status.device_age_days == 0
    assert alice.keys.rotation_due() is None and rotation_notice(alice) is None

    clock.advance(days=29)
    assert alice.keys.rotation_due() is None
    clock.advance(days=2)  # 31 days old: due, and said by every command, from the profile alone
    alice = await reopen(alice, clock, transport)
    try:
        due = alice.keys.rotation_due()
        assert due is not None and due.master_age_days == 31 and due.due_in_days == -1
        assert rotation_notice(alice) == "tokenim: your master key is 31 days old: run `tokenim keys rotate`"
        await alice.account.login()  # the 30-day session ran out meanwhile
        await alice.keys.rotate()
        assert alice.keys.rotation_due() is None and rotation_notice(alice) is None
        status = await alice.keys.status()
        assert (status.master_key_version, status.master_age_days, status.device_age_days) == (2, 0, 31)
        assert insides(alice).store.get_meta("key_rotation_days") == "30"
    finally:
        await alice.close()


async def test_without_the_server_setting_the_default_is_a_year(alice: Client, clock: FakeClock) -> None:
    assert insides(alice).store.get_meta("key_rotation_days") is None  # never asked the server yet
    clock.advance(days=364)
    assert alice.keys.rotation_due() is None
    clock.advance(days=1)
    assert rotation_notice(alice) == "tokenim: your master key is 365 days old: run `tokenim keys rotate`"


async def test_every_command_reminds_on_stderr_only(
    alice: Client, clock: FakeClock, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def opened(*_args: object, **_kwargs: object) -> Client:
        return alice

    monkeypatch.setattr(Client, "open", opened)
    args = argparse.Namespace(profile="p", passphrase="x", command="whoami")
    await open_client(args)
    assert capsys.readouterr() == ("", "")  # not due: nothing
    clock.advance(days=366)
    await open_client(args)
    out, err = capsys.readouterr()
    assert out == "" and err == "tokenim: your master key is 366 days old: run `tokenim keys rotate`\n"
    await open_client(argparse.Namespace(profile="p", passphrase="x", command="keys", keys_command="rotate"))
    assert capsys.readouterr() == ("", "")  # the command that does it does not nag
