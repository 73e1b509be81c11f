"""Time is passed in, never read: a Clock protocol and a FakeClock tests can advance."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time in integer milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        """The current time in milliseconds."""
        ...


class FakeClock:
    """A clock that only moves when told to: drives expiry and rotation in tests without sleeping."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        """The current (fake) time in milliseconds."""
        return self._now

    def advance(self, *, ms: int = 0, seconds: float = 0, days: float = 0) -> None:
        """Move time forward."""
        self._now += ms + int(seconds * 1000) + int(days * 86_400_000)


class SystemClock:
    """Wall-clock time. Only the edges (the `serve` command, the CLI) construct one and pass it in."""

    def now_ms(self) -> int:
        """The current time in milliseconds."""
        import time

        return time.time_ns() // 1_000_000
