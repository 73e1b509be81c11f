"""What a new user hit trying wrong input on every key-lifecycle command from a fresh clone (the review round):
each is checked where the sentence or the refusal is made, on real clients against the in-process server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import httpx
import pytest

from tests.client.test_key_lifecycle import second_device
from tests.client.test_user_findings import opens
from tests.client.test_verification import answer
from tokenim.cli import main as cli_main
from tokenim.cli import verify as cli_verify
from tokenim.cli.backup import RECOVERY_PURPOSE
from tokenim.cli.key_files import FILE_PURPOSE, check_readable
from tokenim.cli.output import message_text
from tokenim.cli.prompt import PROFILE_PURPOSE, check_strength
from tokenim.client import Client
from tokenim.client.messages import KEY_FILE_WHY
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError


async def test_a_removed_device_is_told_it_was_removed_not_to_log_in_again(
    alice: Client, clock: FakeClock, transport: httpx.ASGITransport
) -> None:
    """`unauthorized` said "log in again" and `login` then said "no device": round in circles. Both now say the
    device was removed and can't log in again."""
    laptop = await second_device(alice, clock, transport)
    try:
        await alice.devices.remove(laptop.device_id, force=True)
        for attempt in (laptop.account.whoami, laptop.account.login):
            with pytest.raises(TokenIMError) as err:
                await attempt()
            assert err.value.code is ErrorCode.UNKNOWN_DEVICE, err.value
            assert "removed from your account" in err.value.message and "log in again" in err.value.message
    finally:
        await laptop.close()


async def test_a_safety_number_of_the_wrong_length_is_malformed_not_a_mismatch(alice: Client, bob: Client) -> None:
    for typed in ("123", "", "1" * 59):
        with pytest.raises(TokenIMError) as err:
            await alice.verification.mark_verified("@bob", typed)
        assert err.value.code is ErrorCode.INVALID_REQUEST and "60 digits" in err.value.message
        assert "in between" not in err.value.message
    assert not alice.verification.status("@bob").verified


async def test_number_without_mark_verified_is_refused(alice: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_verify, "open_client", opens(alice))
    with pytest.raises(TokenIMError) as err:
        await cli_verify.cmd_fingerprint(argparse.Namespace(user="@bob", mark_verified=False, number="123"))
    assert err.value.code is ErrorCode.INVALID_REQUEST and "--mark-verified" in err.value.message


async def test_verify_says_it_waits_only_once_the_person_checked_out(alice: Client) -> None:
    waited: list[str] = []
    for who in ("@alice", "@nosuch", "@x\x1b]0;pwn\x07"):
        with pytest.raises(TokenIMError):
            await alice.verification.sas(who, answer(True, []), on_waiting=waited.append)
    assert waited == []


def test_options_are_never_abbreviated() -> None:
    """`--pass FILE` was taken for --passphrase-file; `backup status --passphrase` named an option not typed."""
    parser = cli_main.build_parser()
    for argv in (["keys", "status", "--pass", "pf"], ["keys", "status", "--passphrase", "pf"]):
        with pytest.raises(cli_main.UsageError) as err:
            parser.parse_args(argv)
        assert "passphrase-file" not in str(err.value)
    assert parser.parse_args(["keys", "status", "--passphrase-file", "pf"]).passphrase_file == "pf"


def test_a_folder_or_a_pipe_is_not_reported_missing(tmp_path: Path) -> None:
    pipe = tmp_path / "fifo.key"
    os.mkfifo(pipe)
    cases = [(tmp_path, "is a folder"), (pipe, "not a regular file"), (tmp_path / "nothing", "There is no file")]
    for path, said in cases:
        with pytest.raises(TokenIMError) as err:
            check_readable(path)
        assert said in err.value.message


def test_a_weak_passphrase_is_refused_for_what_it_protects() -> None:
    for purpose in (PROFILE_PURPOSE, FILE_PURPOSE, RECOVERY_PURPOSE):
        with pytest.raises(TokenIMError) as err:
            check_strength("abc", [], purpose)
        assert err.value.message.endswith(purpose)
    assert len({PROFILE_PURPOSE, FILE_PURPOSE, RECOVERY_PURPOSE}) == 3


def test_a_message_read_with_a_key_from_a_file_is_not_called_an_unverified_device() -> None:
    message = {"id": "$e", "room": "plans", "sender": "@alice:x", "sender_device": "DEV", "body": "hi", "ts": 0}
    why = f"{KEY_FILE_WHY}: it is verified once device DEV gives this device the key itself"
    text = message_text(message | {"verified": False, "why_not": why})
    assert "(key from a file or backup)" in text and "unverified device" not in text
    assert "(unverified device)" in message_text(message | {"verified": False, "why_not": "device DEV is not signed"})
