"""`tokenim chat` as a person uses it: two apps in tmux (one terminal each) against a real `tokenim serve`.
Alice opens a direct chat and writes, Bob sees it and replies, Alice sees the reply. Keys go in with
send-keys; the screens are read with capture-pane, waiting on what they show (with a deadline)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENIM, Cli, RunningServer, start_server, stop_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Tmux:
    """A tmux server of this test's own (its own socket), one session per person."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENIM_", "TMUX"))}
        done = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, env=env, timeout=30)
        assert done.returncode == 0, f"tmux {' '.join(args)}: {done.stderr}"
        return done.stdout

    def start(self, name: str, cli: Cli) -> None:
        """`tokenim chat` for `cli`'s profile in a 120 by 40 terminal; the passphrase from the environment."""
        command = [*TOKENIM, "--profile", str(cli.profile), "chat", "--notify", "off"]
        self.run("new-session", "-d", "-s", name, "-x", "120", "-y", "40", "-e", f"TOKENIM_PASSPHRASE={cli.passphrase}",
                 "--", *command)  # fmt: skip
        self.run("set-option", "-t", name, "remain-on-exit", "on")  # a crash stays readable

    def screen(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", name)

    def type(self, name: str, text: str) -> None:
        self.run("send-keys", "-t", name, "-l", text)

    def press(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def wait_for(self, name: str, text: str, timeout: float = 90) -> str:
        """The screen once it shows `text`; fails with the screen after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen(name)
            if text in shown:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}'s screen never showed {text!r}:\n{shown}")
            time.sleep(0.1)  # polling the screen, not waiting for a guessed time

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path / "tmux.sock")
    yield t
    t.kill()


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


def test_two_people_chat_in_two_terminals(open_server: RunningServer, tmux: Tmux, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    alice.json("register", "--server", open_server.url, "--username", "alice")
    bob.json("register", "--server", open_server.url, "--username", "bob")
    tmux.start("alice", alice)
    tmux.start("bob", bob)
    tmux.wait_for("alice", "TokenIM · @alice:localhost")
    tmux.wait_for("bob", "No room yet")

    tmux.type("alice", "/dm @bob")
    tmux.press("alice", "Enter")
    tmux.wait_for("alice", "direct chat with @bob")
    tmux.type("alice", "hello bob, [red]lunch?")
    tmux.press("alice", "Enter")

    shown = tmux.wait_for("bob", "@alice ?: hello bob, [red]lunch?")  # unverified, and the markup as typed
    assert "direct chat with @alice" in shown
    tmux.type("bob", "yes, at noon")
    tmux.press("bob", "C-j")
    tmux.type("bob", "see you")
    tmux.press("bob", "Enter")

    shown = tmux.wait_for("alice", "@bob ?: yes, at noon")
    assert "        see you" in shown and "No messages yet" not in shown  # the second line of the same message
    tmux.press("alice", "C-q")
    tmux.press("bob", "C-q")
