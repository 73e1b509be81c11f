"""What an outside tester hit using every key-lifecycle command as a new user (third round): the CLI commands run
in-process on real clients against the in-process server, so the wording is checked where it is made."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.client.test_backup import chat, new_device
from tests.conftest import FAST_KDF
from tokenim.cli import backup as cli_backup
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.crypto.backup import encode_recovery_key, new_secret


def opens(client: Client) -> Callable[[argparse.Namespace], Awaitable[Client]]:
    async def opened(_args: argparse.Namespace) -> Client:
        return client

    return opened


@pytest.fixture(autouse=True)
def _no_secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKENIM_RECOVERY_KEY", "TOKENIM_RECOVERY_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)


async def test_restoring_a_passphrase_backup_with_a_key_says_to_add_passphrase(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.ASGITransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    await chat(alice, bob)
    await alice.backup.create("a long recovery passphrase", kdf=FAST_KDF)
    second = await new_device(alice, clock, transport)
    monkeypatch.setattr(cli_backup, "open_client", opens(second))
    with pytest.raises(TokenIMError) as cli:  # before asking for a key: none is set and this is no terminal
        await cli_backup.cmd_backup_restore(argparse.Namespace(recovery_passphrase=False))
    assert cli.value.code is ErrorCode.WRONG_RECOVERY_KEY and "made with a recovery passphrase" in cli.value.message
    assert "--passphrase" in cli.value.message
    second = await new_device(alice, clock, transport)
    try:  # the SDK says the same when given a well-formed key
        with pytest.raises(TokenIMError) as sdk:
            await second.backup.restore(recovery_key=encode_recovery_key(new_secret()))
        assert sdk.value.code is ErrorCode.WRONG_RECOVERY_KEY and "made with a recovery passphrase" in sdk.value.message
    finally:
        await second.close()
