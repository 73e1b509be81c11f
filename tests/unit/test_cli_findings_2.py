"""Second outside round as a new user: removing yourself reports success, an error written into a closed
pipe ends quietly, a damaged profile (still valid SQLite) or anything unexpected is one sentence, and a
refused `send @user` starts no direct chat."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_KDF
from tests.unit.test_cli_findings import STRONG, _environment, _Rooms, refused, run  # noqa: F401 (autouse fixture)
from tokenim.cli import main as cli_main
from tokenim.cli import messages, rooms
from tokenim.client import ProfileStore
from tokenim.client.files import download_file
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.api import RoomSummary


class _Leaving(_Rooms):
    """Removing yourself leaves the room; after that the room can no longer be read."""

    left = False

    async def get(self, room_id: str) -> RoomSummary:
        if self.left:
            raise TokenIMError(ErrorCode.FORBIDDEN, "You are not in this room.")
        return await super().get(room_id)

    async def remove(self, room_id: str, user: str) -> None:
        self.left = True


def test_removing_yourself_is_reported_as_done(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = _Leaving()

    async def opened(_args: argparse.Namespace) -> _Leaving:
        return fake

    monkeypatch.setattr(rooms, "open_client", opened)
    code, out, _err = run(capsys, "--profile", str(tmp_path), "room", "remove", "team", "@me", "--json")
    result = json.loads(out)
    assert code == 0 and fake.left and result["removed"] == ["@me:localhost"] and result["failed"] == []
    assert result["name"] == "team"


def test_an_error_written_into_a_closed_pipe_ends_quietly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def closed(_err: TokenIMError, _as_json: bool) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_main, "_fail", closed)
    code, _out, err = run(capsys, "--profile", str(tmp_path / "none"), "read", "nosuch", "--json")
    assert code == 141 and err == ""
    code, _out, err = run(capsys, "--no-such-option", "--json")  # an argument error, reported into the pipe
    assert code == 141 and err == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("kdf", "{bad"),
        ("kdf", json.dumps({"time_cost": 3, "memory_kib": 999999999999, "parallelism": 1, "salt_hex": "00" * 16})),
        ("kdf", json.dumps({"time_cost": "3", "memory_kib": 8192, "parallelism": 1, "salt_hex": "00" * 16})),
        ("wrapped_key", json.dumps({"nonce": 5})),
        ("wrapped_key", "[]"),
    ],
)
def test_a_damaged_profile_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, value: str) -> None:
    ProfileStore.create(tmp_path / "p", STRONG, FAST_KDF).close()
    with sqlite3.connect(ProfileStore.db_path(tmp_path / "p")) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))
    with pytest.raises(TokenIMError) as err:
        ProfileStore.open(tmp_path / "p", STRONG)
    assert err.value.code is ErrorCode.PROFILE_MISSING and "damaged" in err.value.message
    error = refused(capsys, "--profile", str(tmp_path / "p"), "whoami", words=("damaged",))
    assert error["code"] == "profile_missing"


def test_anything_unexpected_is_one_sentence_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def broken(_args: argparse.Namespace) -> dict[str, Any]:
        raise ValueError("invalid literal for int() with base 10: 'abc'")

    monkeypatch.setattr(messages, "cmd_read", broken)
    monkeypatch.setattr(cli_main.messages, "cmd_read", broken)
    error = refused(capsys, "--profile", str(tmp_path), "read", "team", words=("unexpected", "TOKENIM_DEBUG"))
    assert error["code"] == "internal_error"


class _NoChatYet:
    """A client with no direct chat with anyone yet; notes whether one was started."""

    def __init__(self) -> None:
        self.started = False

    @property
    def rooms(self) -> _NoChatYet:
        return self

    async def __aenter__(self) -> _NoChatYet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def resolve(self, target: str, *, create: bool = False) -> str:
        if not create:
            raise TokenIMError(ErrorCode.NOT_FOUND, "You have no direct chat with them yet.")
        self.started = True
        return "!new"


@pytest.mark.parametrize(("text", "code"), [("   ", "invalid_request"), ("é" * 40_000, "body_too_large")])
def test_a_refused_send_starts_no_direct_chat(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, code: str
) -> None:
    fake = _NoChatYet()

    async def opened(_args: argparse.Namespace) -> _NoChatYet:
        return fake

    monkeypatch.setattr(messages, "open_client", opened)
    error = refused(capsys, "--profile", str(tmp_path), "send", "@dave", text)
    assert error["code"] == code and not fake.started


@pytest.mark.parametrize("blob_id", ["../../v1/whoami", "//evil.example/x", "a" * 10, None, 5])
async def test_a_file_message_naming_no_valid_blob_fetches_nothing(tmp_path: Path, blob_id: object) -> None:
    """The blob id comes from another member's message: a path in its place must not send this device's
    token to another route (found from outside: `../../v1/whoami` made an authenticated GET)."""

    class NoRequests:
        def access_token(self) -> str:
            raise AssertionError("nothing may be fetched")

    with pytest.raises(TokenIMError) as err:
        await download_file(NoRequests(), {"blob_id": blob_id}, tmp_path / "out", overwrite=False)  # type: ignore[arg-type]
    assert err.value.code is ErrorCode.BAD_RESPONSE
    assert not (tmp_path / "out").exists()
