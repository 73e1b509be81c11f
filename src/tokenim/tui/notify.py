"""Telling the person: the terminal bell, and a desktop notification through `notify-send` when it is
installed (none, and no error, when it is not). Only for a mention or a direct message.

`notify-send` gets its arguments as a list (no shell), after `--` (a body starting with `-` is no option),
escaped as on screen, with `&`, `<` and `>` written as entities: notification daemons read a little HTML in
the body, and a message must not bring its own."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from enum import StrEnum

from tokenim.core.display import clean

MAX_BODY = 120


class NotifyMode(StrEnum):
    """`--notify`: desktop notifications and the bell, the bell only, or nothing."""

    DESKTOP = "desktop"
    BELL = "bell"
    OFF = "off"


def _entities(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Notifier:
    """Rings and notifies; counts what it did (the tests read `bells` and `sent`)."""

    def __init__(self, bell: Callable[[], None], mode: NotifyMode = NotifyMode.DESKTOP, command: str | None = None) -> None:
        self._bell = bell
        self.mode = mode
        # The command is looked up once; absent, desktop notifications are simply off.
        self.command = (command or shutil.which("notify-send")) if mode is NotifyMode.DESKTOP else None
        self.bells = 0
        self.sent: list[list[str]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def alert(self, title: str, body: str) -> None:
        """Ring the bell and, when on and installed, show a desktop notification."""
        if self.mode is NotifyMode.OFF:
            return
        self.bells += 1
        self._bell()
        if self.command is None:
            return
        first = clean(body.split("\n", 1)[0])
        short = first if len(first) <= MAX_BODY else first[: MAX_BODY - 1] + "…"
        argv = [self.command, "--app-name=TokenIM", "--", _entities(clean(title)), _entities(short)]
        self.sent.append(argv)
        task = asyncio.get_running_loop().create_task(self._run(argv))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, argv: list[str]) -> None:
        with contextlib.suppress(OSError):  # it went away since: no notification, no error
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:  # a hung notification daemon must not leave processes behind
                proc.kill()
                await proc.wait()


__all__ = ["Notifier", "NotifyMode"]
