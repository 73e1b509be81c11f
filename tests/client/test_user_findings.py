"""What an outside tester hit using every key-lifecycle command as a new user (third round): the CLI commands run
in-process on real clients against the in-process server, so the wording is checked where it is made."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.client.test_backup import chat, new_device
from tests.client.test_key_lifecycle import reopen, second_device
from tests.client.test_verification import FAST, answer
from tests.conftest import FAST_KDF
from tests.support import insides
from tokenim.cli import backup as cli_backup
from tokenim.cli import main as cli_main
from tokenim.cli import verify as cli_verify
from tokenim.cli.backup import human_restored
from tokenim.cli.key_files import human_import_master
from tokenim.cli.prompt import PromptAborted, ask
from tokenim.client import Client
from tokenim.client.key_files import check_new_file, write_secret_file
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
    monkeypatch.setattr(cli_backup, "open_client", opens(second))
    with pytest.raises(TokenIMError) as no_terminal:  # the right kind, but nothing to read it from
        await cli_backup.cmd_backup_restore(argparse.Namespace(recovery_passphrase=True))
    assert no_terminal.value.code is ErrorCode.BAD_CONFIG and "TOKENIM_RECOVERY_PASSPHRASE" in no_terminal.value.message
    second = await new_device(alice, clock, transport)
    try:  # the SDK says the same when given a well-formed key
        with pytest.raises(TokenIMError) as sdk:
            await second.backup.restore(recovery_key=encode_recovery_key(new_secret()))
        assert sdk.value.code is ErrorCode.WRONG_RECOVERY_KEY and "made with a recovery passphrase" in sdk.value.message
    finally:
        await second.close()


async def test_input_that_ends_cancels_verify_as_the_user_not_as_a_mismatch(
    alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`verify` whose input just ends (EOF at the emoji question) must not tell the other side the emoji differed."""
    monkeypatch.setattr(cli_verify, "open_client", opens(alice))
    with open(os.devnull) as empty:
        monkeypatch.setattr(sys, "stdin", empty)
        async with asyncio.timeout(60):
            mine, theirs = await asyncio.gather(
                cli_verify.cmd_verify(argparse.Namespace(user="@bob", json=True)),
                bob.verification.sas("@alice", answer(True, []), poll_interval=FAST),
                return_exceptions=True,
            )
    assert isinstance(mine, TokenIMError) and mine.code is ErrorCode.CANCELLED, mine
    assert isinstance(theirs, TokenIMError) and theirs.details == {"cancel_code": "m.user", "by": "them"}, theirs
    capsys.readouterr()


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_while_a_command_runs_says_cancelled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, as_json: bool
) -> None:
    """Ctrl-C during `verify` (or any command) prints the cancelled error, as at a prompt, and exits 130."""

    async def interrupted(_args: argparse.Namespace) -> None:
        raise KeyboardInterrupt

    monkeypatch.setenv("TOKENIM_PASSPHRASE", "correct horse battery staple")
    monkeypatch.setattr(cli_verify, "cmd_verify", interrupted)
    code = cli_main.main(["--profile", str(tmp_path), "verify", "@bob", *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert code == 130
    if as_json:
        assert json.loads(out)["error"]["code"] == "cancelled" and err == ""
    else:
        assert out == "" and err.strip() == "tokenim: cancelled."


def test_the_first_ctrl_c_at_a_prompt_inside_the_event_loop_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts asked after the profile is open run inside asyncio.run, whose Ctrl-C handler only cancels the
    task: the first Ctrl-C must still end the prompt at once (exit 130 "cancelled"), not be swallowed."""

    def getpass(_prompt: str) -> str:
        signal.raise_signal(signal.SIGINT)  # the person presses Ctrl-C while the prompt waits
        return "typed on after Ctrl-C"

    async def prompt_after_the_profile_is_open() -> str:
        return ask("Recovery key: ")

    monkeypatch.setattr("getpass.getpass", getpass)
    with pytest.raises(PromptAborted) as aborted:
        asyncio.run(prompt_after_the_profile_is_open())
    assert aborted.value.interrupted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


async def test_messages_from_your_other_devices_are_verified_in_a_fresh_profile_and_after_a_rotation(
    alice: Client, bob: Client, clock: FakeClock, transport: httpx.ASGITransport
) -> None:
    """Each CLI command opens the profile afresh: your own devices must be looked up like anyone's, or every
    message from your other devices reads as "(unverified device)" with no reason given."""
    second = await second_device(alice, clock, transport)
    try:
        room = (await alice.rooms.create("team", ["@bob"])).room_id
        await bob.messages.sync()
        await bob.rooms.join(room)
        await second.messages.sync()
        await second.messages.send_text(room, "from the second device")
        await alice.messages.sync()  # the room key arrives (and the second device is looked up for it)
        alice = await reopen(alice, clock, transport)  # the next command: it knows the key, not the device
        [got] = [m for m in await alice.messages.history(room) if m.body == "from the second device"]
        assert (got.verified, got.why_not) == (True, None)
        await alice.keys.rotate()  # the second device is re-signed by the new key: it stays verified
        await second.messages.sync()
        await second.messages.send_text(room, "after the rotation")
        await alice.messages.sync()
        alice = await reopen(alice, clock, transport)
        read = {m.body: m for m in await alice.messages.history(room)}
        for body in ("from the second device", "after the rotation"):
            assert (read[body].verified, read[body].why_not) == (True, None), read[body]
    finally:
        await second.close()
        await alice.close()


async def test_every_unverified_message_says_why(alice: Client, bob: Client, tmp_path: Path) -> None:
    """A message read with a key from a key file is unverified, and says that is why (not "not signed")."""
    room = (await alice.rooms.create("team", ["@bob"])).room_id
    await bob.messages.sync()
    await bob.rooms.join(room)
    await alice.messages.send_text(room, "hello")
    await bob.messages.sync()
    insides(bob).machine.rooms.inbound.clear()  # bob lost the key, and gets it back from a file
    out = tmp_path / "keys.txt"
    await alice.key_files.export_room_keys(out, "a key file passphrase")
    await bob.key_files.import_room_keys(out, "a key file passphrase")
    [got] = await bob.messages.history(room)
    assert not got.verified and got.why_not is not None and "key file" in got.why_not


def test_small_wording(tmp_path: Path) -> None:
    """A folder given as --out is called a folder; a file that can't be written is named as given, never as
    the temporary file; `keys import` speaks of your own account; a restore with nothing new says so."""
    with pytest.raises(TokenIMError) as folder:
        check_new_file(tmp_path)
    assert "is a folder" in folder.value.message and "already exists" not in folder.value.message
    if Path("/proc").is_dir():
        with pytest.raises(TokenIMError) as unwritable:
            write_secret_file(Path("/proc/nope"), b"secret")
        assert "Cannot write /proc/nope:" in unwritable.value.message and ".part" not in unwritable.value.message
    imported = human_import_master({"user_id": "@alice:x", "device_id": "DEV", "master_key_version": 2, "fingerprint": "F"})
    assert "their" not in imported and "your account @alice:x" in imported
    again = human_restored({"imported": 0, "keys": 5, "version": 3})
    assert "nothing new was restored" in again and "can now be read" not in again
    assert "can now be read" in human_restored({"imported": 2, "keys": 5, "version": 3})
