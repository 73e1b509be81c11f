"""What an outside tester hit as a new user of the CLI (issue 6, second round), in-process: `main()` is run
with fakes in place of the server where a command needs one, so each case costs milliseconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from tokenim.cli import main as cli_main
from tokenim.cli import messages, rooms
from tokenim.cli.output import message_text
from tokenim.client import Message, ProfileStore
from tokenim.client.files import check_destination, download_file, safe_file_name, upload_file
from tokenim.client.messages import Messages
from tokenim.core.errors import LOCAL_CODES, ErrorCode, TokenIMError
from tokenim.protocol.api import RoomsResponse, RoomSummary

STRONG = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [k for k in os.environ if k.startswith("TOKENIM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TOKENIM_PASSPHRASE", STRONG)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], *argv: str, words: tuple[str, ...] = ()) -> dict[str, Any]:
    """Refused in one sentence as text, and as one JSON error object with --json; returns the error."""
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == "" and err.startswith("tokenim: ") and err.count("\n") == 1, (code, out, err)
    assert "Traceback" not in err and "Error" not in err, err
    for word in words:
        assert word in err, (word, err)
    code, out, err = run(capsys, *argv, "--json")
    assert code == 1 and err == "", err
    error: dict[str, Any] = json.loads(out)["error"]
    assert set(error) >= {"code", "message", "status"}
    return error


# --- 1. --force never replaces a device, pipe, socket or folder -----------------------------------------------


def _specials(tmp_path: Path) -> Iterator[Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    yield fifo
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        yield tmp_path / "sock"
    finally:
        sock.close()
    if Path("/dev/null").exists():
        yield Path("/dev/null")


async def test_force_replaces_only_a_regular_file_or_a_link(tmp_path: Path) -> None:
    for special in _specials(tmp_path):
        kind = stat.S_IFMT(special.lstat().st_mode)
        with pytest.raises(TokenIMError, match="not a regular file"):
            check_destination(special, overwrite=True)
        with pytest.raises(TokenIMError, match="not a regular file"):
            await download_file(None, {}, special, overwrite=True)  # type: ignore[arg-type]  # refused before any I/O
        assert stat.S_IFMT(special.lstat().st_mode) == kind  # still what it was
    with pytest.raises(TokenIMError, match="is a folder"):
        check_destination(tmp_path, overwrite=True)
    plain, link = tmp_path / "plain.txt", tmp_path / "link"
    plain.write_text("x")
    link.symlink_to(tmp_path / "fifo")
    check_destination(plain, overwrite=True)  # a regular file, and a link (replaced itself, not its target)
    check_destination(link, overwrite=True)
    with pytest.raises(TokenIMError, match="already exists"):
        check_destination(plain, overwrite=False)


# --- 2. no tracebacks: one sentence, or one JSON error object ------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "127.0.0.1:8471", "http://", "ftp://x:1"])
def test_a_bad_server_url_is_one_sentence(capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str) -> None:
    argv = ("--profile", str(tmp_path / "p"), "register", "--server", url, "--username", "zoe")
    error = refused(capsys, *argv, words=("http://host:port",))
    assert error["code"] == "bad_config"
    assert not (tmp_path / "p").exists()


def test_local_failures_are_one_sentence(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    register = ("register", "--server", "http://127.0.0.1:9", "--username", "zoe")
    refused(capsys, "--profile", str(a_file), *register, words=("is a file",))
    refused(capsys, "--profile", str(a_file), "whoami", words=("is a file",))
    refused(capsys, "--profile", "", "whoami", words=("empty path",))
    refused(capsys, "--profile", str(tmp_path), "download", "$x", "--out", "", words=("empty path",))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "profile.db").write_bytes(b"this is not SQLite at all" * 100)
    assert refused(capsys, "--profile", str(garbage), "whoami", words=("damaged",))["code"] == "profile_missing"


def test_a_truncated_profile_is_damaged(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.conftest import FAST_KDF

    store = ProfileStore.create(tmp_path / "p", STRONG, FAST_KDF)
    store.set_meta({f"filler{i}": "x" * 900 for i in range(40)})
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    db = ProfileStore.db_path(tmp_path / "p")
    db.write_bytes(db.read_bytes()[:5000])
    refused(capsys, "--profile", str(tmp_path / "p"), "whoami", words=("damaged or is not a TokenIM profile",))


def test_the_top_level_maps_os_errors_to_a_sentence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def fails(_args: argparse.Namespace) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/proc/x")

    monkeypatch.setattr(messages, "cmd_listen", fails)
    monkeypatch.setattr(cli_main.messages, "cmd_listen", fails)
    refused(capsys, "--profile", str(tmp_path), "listen", words=("Cannot use /proc/x: no such file or directory.",))


class _Listening:
    """Stands in for a client: `listen` yields messages until closed, and notes that it was closed."""

    closed = False

    async def __aenter__(self) -> _Listening:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    user_id = "@me:x"

    @property
    def messages(self) -> _Listening:
        return self

    @property
    def rooms(self) -> _Listening:
        return self

    async def all(self) -> RoomsResponse:
        return RoomsResponse(rooms=[])

    async def listen(self, **_kwargs: object) -> AsyncIterator[Message]:
        try:
            for i in range(100):
                yield Message(f"$e{i}", "!r", "@a:x", "D", f"hello {i}", 0, True)
                await asyncio.sleep(0)
        finally:
            _Listening.closed = True


def test_listen_into_a_closed_pipe_ends_quietly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    printed: list[object] = []

    def emit_json(value: object) -> None:
        if printed:
            raise BrokenPipeError(32, "Broken pipe")
        printed.append(value)

    async def opened(_args: argparse.Namespace) -> _Listening:
        return _Listening()

    monkeypatch.setattr(messages, "open_client", opened)
    monkeypatch.setattr(messages, "emit_json", emit_json)
    code, _out, err = run(capsys, "--profile", str(tmp_path), "listen", "--json")
    assert code == 141 and err == "" and len(printed) == 1
    assert _Listening.closed  # the stream was closed in order, not left to the garbage collector


# --- 3. the download hint can be pasted into a shell ---------------------------------------------------------


def test_the_file_hint_is_quoted_for_a_shell() -> None:
    m = {"id": "$oC50abc", "room": "!r", "sender": "@a:x", "verified": True, "file": {"name": "a.pdf", "size": 3}}
    assert message_text(m).endswith("tokenim download '$oC50abc']")


# --- 4. text that is not UTF-8 is refused on the command line as it is from stdin --------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("send", "@bob", "x \udcff\udcfe y"),
        ("room", "create", "pl\udcffans"),
        ("room", "invite", "team", "@b\udcffob"),
        ("room", "rename", "team", "n\udcffew"),
    ],
)
def test_text_arguments_must_be_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...]) -> None:
    refused(capsys, "--profile", str(tmp_path), *argv, words=("not UTF-8",))


# --- 5 and 7. room commands: each person tried, rooms named, already joined --------------------------------


class _Rooms:
    def __init__(self, membership: str = "join") -> None:
        self.invited: list[str] = []
        self.joined = False
        self.membership = membership

    async def __aenter__(self) -> _Rooms:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    @property
    def rooms(self) -> _Rooms:
        return self

    def full_user_id(self, user: str) -> str:
        return user if ":" in user else f"@{user.lstrip('@')}:localhost"

    async def resolve(self, target: str, *, create: bool = False, prefer: str = "join") -> str:
        return "!r1"

    async def get(self, room_id: str) -> RoomSummary:
        return RoomSummary(room_id=room_id, kind="group", name="team", membership=self.membership, role="admin", members=[])

    async def invite(self, room_id: str, user: str) -> None:
        if "nobody" in user:
            raise TokenIMError(ErrorCode.UNKNOWN_USER, f"There is no user {user}.")
        self.invited.append(user)

    async def join(self, room_id: str) -> RoomSummary:
        self.joined = True
        return await self.get(room_id)

    async def leave(self, room_id: str) -> None:
        return None


@pytest.fixture
def fake_rooms(monkeypatch: pytest.MonkeyPatch) -> _Rooms:
    fake = _Rooms()

    async def opened(_args: argparse.Namespace) -> _Rooms:
        return fake

    monkeypatch.setattr(rooms, "open_client", opened)
    return fake


def test_invite_tries_everyone_and_reports_each(capsys: pytest.CaptureFixture[str], fake_rooms: _Rooms, tmp_path: Path) -> None:
    argv = ("--profile", str(tmp_path), "room", "invite", "team", "@dan", "@nobody", "@erin")
    code, out, _err = run(capsys, *argv)
    assert code == 1 and fake_rooms.invited == ["@dan:localhost", "@erin:localhost"]
    assert "Invited @dan:localhost, @erin:localhost to 'team'" in out and "@nobody:localhost: There is no user" in out
    code, out, _err = run(capsys, *argv, "--json")
    result = json.loads(out)
    assert code == 1 and result["room_id"] == "!r1" and result["name"] == "team"
    assert result["invited"] == ["@dan:localhost", "@erin:localhost"]
    assert [(f["user_id"], f["error"]["code"]) for f in result["failed"]] == [("@nobody:localhost", "unknown_user")]


def test_join_when_already_in_and_leave_names_the_room(
    capsys: pytest.CaptureFixture[str], fake_rooms: _Rooms, tmp_path: Path
) -> None:
    code, out, _err = run(capsys, "--profile", str(tmp_path), "room", "join", "team")
    assert code == 0 and "already in 'team'" in out and not fake_rooms.joined
    code, out, _err = run(capsys, "--profile", str(tmp_path), "room", "leave", "team")
    assert code == 0 and out.startswith("Left 'team' (!r1)")


def test_room_names_are_checked_in_the_clis_words() -> None:
    with pytest.raises(TokenIMError, match="A room name is at most 255 characters"):
        rooms.create_arguments("x" * 256, [])
    assert rooms.create_arguments("x" * 255, []) == ("x" * 255, [])


# --- 6. the --json contract -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("raised", "exit_code"), [(KeyboardInterrupt, 130), (EOFError, 1)])
def test_cancelled_at_the_prompt_prints_a_json_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raised: type, exit_code: int
) -> None:
    monkeypatch.delenv("TOKENIM_PASSPHRASE")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)

    def getpass(_prompt: str) -> str:
        raise raised

    monkeypatch.setattr("getpass.getpass", getpass)
    code, out, _err = run(capsys, "--profile", str(tmp_path), "whoami", "--json")
    assert code == exit_code and json.loads(out)["error"]["code"] == "cancelled"
    assert ErrorCode.CANCELLED in LOCAL_CODES


def test_an_empty_passphrase_at_the_prompt_is_not_called_wrong(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TOKENIM_PASSPHRASE")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("getpass.getpass", lambda _prompt: "")
    refused(capsys, "--profile", str(tmp_path), "whoami", words=("No passphrase was given",))


async def test_read_json_carries_no_file_key(monkeypatch: pytest.MonkeyPatch) -> None:
    info = {"algorithm": "a", "blob_id": "b", "key": "SECRET", "sha256": "h", "name": "a.pdf", "size": 3, "mimetype": "x/y"}

    class Reading:
        async def __aenter__(self) -> Reading:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        @property
        def rooms(self) -> Reading:
            return self

        @property
        def messages(self) -> Reading:
            return self

        async def resolve(self, target: str) -> str:
            return "!r"

        async def sync(self) -> None:
            return None

        async def history(self, room_id: str, limit: int) -> list[Message]:
            return [Message("$f", "!r", "@a:x", "D", "a.pdf", 0, True, file=info)]

    async def opened(_args: argparse.Namespace) -> Reading:
        return Reading()

    monkeypatch.setattr(messages, "open_client", opened)
    result = await messages.cmd_read(argparse.Namespace(target="x", limit=5))
    (shown,) = result["messages"]
    assert shown["id"] == "$f" and shown["file"] == {"name": "a.pdf", "size": 3, "mimetype": "x/y"}
    assert "SECRET" not in json.dumps(result)


# --- 7. wording -------------------------------------------------------------------------------------------------


async def test_sending_a_missing_file_says_it_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(TokenIMError, match="does not exist"):
        await upload_file(None, tmp_path / "missing.pdf")  # type: ignore[arg-type]
    with pytest.raises(TokenIMError, match="is not a file"):
        await upload_file(None, tmp_path)  # type: ignore[arg-type]


def test_a_shortened_file_name_keeps_its_extension() -> None:
    name = "r" * 250 + ".pdf"
    safe = safe_file_name(name)
    assert safe.endswith(".pdf") and len(safe.encode()) <= 200
    assert safe_file_name("é" * 300 + ".tar.gz").endswith(".gz")


async def test_listen_says_in_words_why_it_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    async def once(_ready: object) -> AsyncIterator[Message]:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionClosed(Close(1012, "service restart"), None)
        yield Message("$e", "!r", "@a:x", "D", "back", 0, True)

    async def no_wait(_s: float) -> None:
        return None

    monkeypatch.setattr("tokenim.client.messages.asyncio.sleep", no_wait)
    reasons: list[str] = []
    fake = SimpleNamespace(_listen_once=once, _listen_synced=False)
    stream = Messages.listen(fake, on_retry=lambda reason, _delay: reasons.append(reason))  # type: ignore[arg-type]
    assert (await anext(stream)).body == "back"
    await stream.aclose()  # type: ignore[attr-defined]
    assert reasons == ["the server restarted"]


def test_listen_says_reconnected_once_it_is_back(capsys: pytest.CaptureFixture[str]) -> None:
    ready = messages._Reconnects(announce=True)
    ready.set()
    ready.retry("the server restarted", 1.0)
    ready.set()
    ready.set()
    err = capsys.readouterr().err
    assert err == "tokenim: the server restarted; reconnecting in 1 s…\ntokenim: reconnected.\n"
    quiet = messages._Reconnects(announce=False)  # --json: the retries are said, "reconnected" is not
    quiet.retry("x", 1.0)
    quiet.set()
    assert "reconnected." not in capsys.readouterr().err
