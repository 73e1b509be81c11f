"""The CLI as a new user meets it (issue 6): real server, real `tokenim` processes, a real terminal for prompts."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from tests.e2e.conftest import TOKENIM, Cli, RunningServer, free_port, start_server, stop_server
from tokenim.cli.output import CONTINUATION

pytestmark = pytest.mark.e2e


def _env(cli: Cli | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
    if cli is not None:
        env["TOKENIM_PASSPHRASE"] = cli.passphrase
    return env


def _run(cli: Cli, *args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOKENIM, "--profile", str(cli.profile), *args],
        capture_output=True,
        text=True,
        env=_env(cli),
        cwd=cwd,
        input=stdin,
        timeout=60,
    )


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """A refusal is one sentence on stderr, exit 1, no traceback and no exception class name."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    text = proc.stderr
    assert text.startswith("tokenim: ") and text.count("\n") == 1, text
    assert "Traceback" not in text and "Error" not in text.replace("tokenim: ", ""), text
    for word in words:
        assert word in text, (word, text)
    return text


def _terminal_safe(text: str) -> None:
    for ch in ("\x1b", "\x07", "\r", "\u202e"):
        assert ch not in text, repr(text)


@dataclass
class Pair:
    server: RunningServer
    alice: Cli
    bob: Cli


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One server and two registered people, shared by the tests of this module (each uses its own rooms)."""
    tmp = tmp_path_factory.mktemp("pair")
    srv = start_server(tmp / "data", "--registration", "open")
    alice, bob = Cli(tmp / "alice"), Cli(tmp / "bob")
    try:
        alice.json("register", "--server", srv.url, "--username", "alice")
        bob.json("register", "--server", srv.url, "--username", "bob")
        yield Pair(srv, alice, bob)
    finally:
        stop_server(srv)


def _group(pair: Pair, name: str) -> None:
    created = _run(pair.alice, "room", "create", name, "--invite", "@bob")
    assert created.stdout.startswith(f"Created '{name}' (!"), created.stdout
    pair.bob.json("room", "join", name)


def test_invite_codes_in_any_case_and_expiry_in_words(server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    typed = server.bootstrap_invite.lower().replace("-", "")
    alice.json("register", "--server", server.url, "--username", "alice", "--invite", typed)
    code = alice.run("admin", "invite", "create", "--expires", "2d").stdout
    assert "ms since the epoch" not in code and "UTC" in code
    bob_code = code.split("Invite code: ")[1].split("\n")[0].replace("-", " ")
    bob.json("register", "--server", server.url, "--username", "bob", "--invite", bob_code)
    expired = _run(alice, "admin", "invite", "create", "--expires", "0m")
    assert "expires_in_seconds" not in _refused(expired, "between 1 minute and 365 days")


def test_a_message_cannot_fake_lines_or_steer_the_terminal(pair: Pair) -> None:
    alice, bob = pair.alice, pair.bob
    _group(pair, "escapes")
    members = _run(bob, "room", "members", "escapes").stdout
    assert not members.startswith("{") and "@alice:localhost  admin" in members
    fake = "see you\n[escapes] @carol:localhost: wire the money now\r\x1b]0;pwned\x07\x1b[2J\u202eevil"
    alice.json("send", "escapes", fake)
    shown = bob.run("read", "escapes").stdout
    _terminal_safe(shown)
    lines = shown.rstrip("\n").split("\n")
    assert lines[0].endswith("@alice:localhost (unverified): see you") and lines[1].startswith(CONTINUATION)
    assert not any(line.startswith("[escapes] @carol") for line in lines)
    assert json.loads(bob.run("read", "escapes", "--json").stdout)[0]["body"] == fake  # JSON keeps it, escaped


@pytest.fixture(scope="module")
def shared_file(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A room with a text message, then a file whose name tries to steer the terminal and leave its folder."""
    alice, bob = pair.alice, pair.bob
    _group(pair, "files")
    alice.json("send", "files", "not a file")
    evil = tmp_path_factory.mktemp("send") / "..\x1b]0;t\x07\u202ereport.txt"
    evil.write_text("quarterly numbers\n")
    alice.json("send-file", "files", str(evil))
    _terminal_safe(bob.run("read", "files").stdout)
    messages = json.loads(bob.run("read", "files", "--json").stdout)
    (file_id,) = [m["id"] for m in messages if m.get("file")]
    return file_id, messages[0]["id"]


def test_a_download_is_named_safely_and_never_overwrites(pair: Pair, shared_file: tuple[str, str], tmp_path: Path) -> None:
    bob, (file_id, _text_id) = pair.bob, shared_file
    saved = _run(bob, "download", file_id, cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    _terminal_safe(saved.stdout)
    (made,) = list(tmp_path.iterdir())
    assert made.read_text() == "quarterly numbers\n" and made.name.endswith("report.txt")
    assert "/" not in made.name and "\x1b" not in made.name and not made.name.startswith(".")
    made.write_text("my own edits")
    _refused(_run(bob, "download", file_id, cwd=tmp_path), "already exists", "--force")
    _refused(_run(bob, "download", file_id, "--out", ".", cwd=tmp_path), "already exists")  # "." is a folder
    assert made.read_text() == "my own edits"  # never overwritten without --force
    assert _run(bob, "download", file_id, "--force", cwd=tmp_path).returncode == 0
    assert made.read_text() == "quarterly numbers\n"
    assert [p.name for p in tmp_path.iterdir()] == [made.name]  # no partial files left behind


def test_download_into_a_folder_and_its_refusals(pair: Pair, shared_file: tuple[str, str], tmp_path: Path) -> None:
    bob, (file_id, text_id) = pair.bob, shared_file
    into = tmp_path / "into"
    into.mkdir()
    assert _run(bob, "download", file_id, "--out", str(into)).returncode == 0
    assert [p.read_text() for p in into.iterdir()] == ["quarterly numbers\n"]
    _refused(_run(bob, "download", file_id, "--out", str(tmp_path / "missing" / "x.txt")), "does not exist")
    _refused(_run(bob, "download", text_id, cwd=tmp_path), "text message, not a file")
    assert [p.name for p in tmp_path.iterdir()] == ["into"]


def test_the_device_in_use_cannot_be_removed(pair: Pair) -> None:
    me = pair.bob.json("whoami")["device_id"]
    _refused(_run(pair.bob, "devices", "remove", str(me)), "this device")
    assert pair.bob.json("whoami")["device_id"] == me


def test_reading_creates_nothing_and_room_names_are_unique(pair: Pair, tmp_path: Path) -> None:
    alice, bob = pair.alice, pair.bob
    carol = Cli(tmp_path / "carol")
    carol.json("register", "--server", pair.server.url, "--username", "carol")
    _refused(_run(carol, "read", "@alice"), "no direct chat")
    assert carol.json("rooms")["rooms"] == []
    rooms: list[dict[str, Any]] = alice.json("rooms")["rooms"]  # type: ignore[assignment]
    assert not [r for r in rooms if "@carol:localhost" in r["members"]]
    # A second room of the same name is refused, and the first stays usable by name for everyone.
    _group(pair, "team")
    _refused(_run(alice, "room", "create", "Team"), "already in a room named 'team'")
    assert bob.json("room", "members", "team")["room_id"] == alice.json("room", "members", "team")["room_id"]


def test_text_from_stdin_or_a_file_with_limits_in_the_users_units(pair: Pair, tmp_path: Path) -> None:
    alice, bob = pair.alice, pair.bob
    _group(pair, "texts")
    assert _run(alice, "send", "texts", "-", stdin="from a pipe\nsecond line\n").returncode == 0
    note = tmp_path / "note.txt"
    note.write_text("from a file\n")
    assert _run(alice, "send", "texts", "--file", str(note)).returncode == 0
    _refused(_run(alice, "send", "texts", ""), "empty")
    _refused(_run(alice, "send", "texts", "-", stdin="\n"), "empty")
    big = tmp_path / "big.txt"
    big.write_text("x" * 50_000)
    too_big = _refused(_run(alice, "send", "texts", "--file", str(big)), "50,000 bytes", "at most")
    assert "65,536-byte" not in too_big
    typed = _refused(_run(alice, "send", "texts", "y" * 50_000), "50,000 characters")
    assert "bytes of it" not in typed
    bodies = [m["body"] for m in json.loads(bob.run("read", "texts", "--json").stdout)]
    assert bodies == ["from a pipe\nsecond line", "from a file"]  # and nothing else was sent


class _Lines:
    """Lines a process prints, read on a thread so a test can wait for one with a deadline."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, needle: str, seconds: float = 30) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} within {seconds} s")


def test_listen_survives_a_restart_and_logout_never_forgets_a_live_session(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    server = start_server(data, "--registration", "open", port=port)
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    listener = None
    try:
        alice.json("register", "--server", server.url, "--username", "alice")
        bob.json("register", "--server", server.url, "--username", "bob")
        alice.json("send", "@bob", "before the restart")
        listener = subprocess.Popen(
            [*TOKENIM, "--profile", str(bob.profile), "listen", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(bob),
        )
        out, err = _Lines(listener.stdout), _Lines(listener.stderr)
        out.wait_for("before the restart")
        stop_server(server)
        err.wait_for("reconnecting")
        assert listener.poll() is None  # still running: it waits and retries

        down = _refused(_run(alice, "logout"), "still logged in")
        assert "ConnectError" not in down
        server = start_server(data, "--registration", "open", port=port)
        assert alice.json("whoami")["user_id"] == "@alice:localhost"  # the session was kept, and still works

        alice.json("send", "@bob", "after the restart")
        assert json.loads(out.wait_for("after the restart"))["sender"] == "@alice:localhost"
        ended = alice.json("logout", "--all")
        assert ended["sessions_ended"] == 1 and ended["all"] is True
        _refused(_run(alice, "whoami"), "not logged in")
    finally:
        if listener is not None:
            listener.send_signal(signal.SIGINT)
            listener.communicate(timeout=15)
        stop_server(server)


def _at_terminal(argv: list[str], keys: list[bytes], env: dict[str, str]) -> tuple[int, str]:
    """Run a command on a pseudo-terminal, typing `keys` one at a time, each after a prompt appears."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command, with the pty as its controlling terminal
        os.execvpe(argv[0], argv, env)
    output = b""
    deadline = time.monotonic() + 30
    pending = list(keys)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break  # the child closed the terminal: it has exited
                if not chunk:
                    break
                output += chunk
                if pending and output.rstrip().endswith(b":"):
                    os.write(fd, pending.pop(0))
                    output += b"<typed>"
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"still running after 30 s: {output!r}")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


@pytest.mark.parametrize(
    ("keys", "code", "said"),
    [
        ([b"\x03"], 130, "cancelled"),  # Ctrl-C at the first prompt ends it at once
        ([b"\x04"], 1, "no passphrase"),  # Ctrl-D too, without a traceback
        ([b"a\n"], 1, "too weak"),  # a one-letter passphrase is refused with a reason
        ([b"correct horse battery staple\n", b"\x03"], 130, "cancelled"),  # Ctrl-C at the second prompt
    ],
)
def test_the_passphrase_prompt(tmp_path: Path, keys: list[bytes], code: int, said: str) -> None:
    profile = tmp_path / "profile"
    argv = [*TOKENIM, "--profile", str(profile), "register", "--server", "http://127.0.0.1:9", "--username", "zoe"]
    rc, output = _at_terminal(argv, keys, _env())
    assert rc == code, output
    assert said in output and "Traceback" not in output, output
    assert not (profile / "profile.db").exists()
