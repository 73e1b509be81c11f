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
from pathlib import Path
from typing import IO

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


def test_messages_files_and_names_reach_the_terminal_escaped(server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    # Invite codes are accepted in any case, with or without dashes.
    typed = server.bootstrap_invite.lower().replace("-", "")
    alice.json("register", "--server", server.url, "--username", "alice", "--invite", typed)
    code = alice.run("admin", "invite", "create", "--expires", "2d").stdout
    assert "ms since the epoch" not in code and "UTC" in code
    bob_code = code.split("Invite code: ")[1].split("\n")[0].replace("-", " ")
    bob.json("register", "--server", server.url, "--username", "bob", "--invite", bob_code)
    expired = _run(alice, "admin", "invite", "create", "--expires", "0m")
    assert "expires_in_seconds" not in _refused(expired, "between 1 minute and 365 days")

    created = _run(alice, "room", "create", "plans", "--invite", "@bob")
    assert created.stdout.startswith("Created 'plans' (!"), created.stdout
    bob.json("room", "join", "plans")
    members = _run(bob, "room", "members", "plans").stdout
    assert not members.startswith("{") and "@alice:localhost  admin" in members

    fake = "see you\n[plans] @carol:localhost: wire the money now\r\x1b]0;pwned\x07\x1b[2J\u202eevil"
    alice.json("send", "plans", fake)
    shown = bob.run("read", "plans").stdout
    _terminal_safe(shown)
    lines = shown.rstrip("\n").split("\n")
    assert lines[0].endswith("@alice:localhost: see you") and lines[1].startswith(CONTINUATION)
    assert not any(line.startswith("[plans] @carol") for line in lines)
    assert json.loads(bob.run("read", "plans", "--json").stdout)[0]["body"] == fake  # JSON keeps it, escaped

    # A file whose name tries to steer the terminal and climb out of the folder.
    sent = tmp_path / "send"
    sent.mkdir()
    evil = sent / "..\x1b]0;t\x07\u202ereport.txt"
    evil.write_text("quarterly numbers\n")
    alice.json("send-file", "plans", str(evil))
    listing = bob.run("read", "plans").stdout
    _terminal_safe(listing)
    (file_id,) = [m["id"] for m in json.loads(bob.run("read", "plans", "--json").stdout) if m.get("file")]
    text_id = json.loads(bob.run("read", "plans", "--json").stdout)[0]["id"]
    _download_rules(bob, file_id, text_id, tmp_path)

    # The device in use can't be removed from itself: that would lock the account out.
    me = bob.json("whoami")["device_id"]
    _refused(_run(bob, "devices", "remove", str(me)), "this device")
    assert bob.json("whoami")["device_id"] == me


def _download_rules(bob: Cli, file_id: str, text_id: str, tmp_path: Path) -> None:
    here = tmp_path / "downloads"
    here.mkdir()
    saved = _run(bob, "download", file_id, cwd=here)
    assert saved.returncode == 0, saved.stderr
    _terminal_safe(saved.stdout)
    (made,) = list(here.iterdir())
    assert made.read_text() == "quarterly numbers\n" and made.name.endswith("report.txt")
    assert "/" not in made.name and "\x1b" not in made.name and not made.name.startswith(".")
    made.write_text("my own edits")
    _refused(_run(bob, "download", file_id, cwd=here), "already exists", "--force")
    assert made.read_text() == "my own edits"  # never overwritten without --force
    assert _run(bob, "download", file_id, "--force", cwd=here).returncode == 0
    assert made.read_text() == "quarterly numbers\n"
    into = tmp_path / "into"
    into.mkdir()
    assert _run(bob, "download", file_id, "--out", str(into)).returncode == 0
    assert [p.name for p in into.iterdir()] == [made.name]
    _refused(_run(bob, "download", file_id, "--out", ".", cwd=here), "already exists")  # "." is a folder: same name inside
    assert _run(bob, "download", file_id, "--out", ".", cwd=tmp_path).returncode == 0
    _refused(_run(bob, "download", file_id, "--out", str(tmp_path / "missing" / "x.txt")), "does not exist")
    _refused(_run(bob, "download", text_id, cwd=here), "text message, not a file")
    assert sorted(p.name for p in here.iterdir()) == [made.name]  # no partial files left behind


def test_text_from_stdin_or_a_file_with_limits_in_the_users_units(server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    alice.json("register", "--server", server.url, "--username", "alice", "--invite", server.bootstrap_invite)
    invite = alice.json("admin", "invite", "create")["code"]
    bob.json("register", "--server", server.url, "--username", "bob", "--invite", str(invite))

    # Reading creates nothing: no direct chat appears for either person.
    _refused(_run(bob, "read", "@alice"), "no direct chat")
    assert bob.json("rooms")["rooms"] == [] and alice.json("rooms")["rooms"] == []

    assert _run(alice, "send", "@bob", "-", stdin="from a pipe\nsecond line\n").returncode == 0
    note = tmp_path / "note.txt"
    note.write_text("from a file\n")
    assert _run(alice, "send", "@bob", "--file", str(note)).returncode == 0
    bodies = [m["body"] for m in json.loads(bob.run("read", "@alice", "--json").stdout)]
    assert bodies == ["from a pipe\nsecond line", "from a file"]

    _refused(_run(alice, "send", "@bob", ""), "empty")
    _refused(_run(alice, "send", "@bob", "-", stdin="\n"), "empty")
    big = tmp_path / "big.txt"
    big.write_text("x" * 50_000)
    too_big = _refused(_run(alice, "send", "@bob", "--file", str(big)), "50,000 bytes", "at most")
    assert "65,536-byte" not in too_big
    typed = _refused(_run(alice, "send", "@bob", "y" * 50_000), "50,000 characters")
    assert "bytes of it" not in typed
    assert len(json.loads(bob.run("read", "@alice", "--json").stdout)) == 2  # nothing more was sent

    # A second room of the same name is refused, and the first stays usable by name for everyone.
    alice.json("room", "create", "team", "--invite", "@bob")
    _refused(_run(alice, "room", "create", "Team"), "already in a room named 'team'")
    bob.json("room", "join", "team")
    assert bob.json("room", "members", "team")["room_id"] == alice.json("room", "members", "team")["room_id"]


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
