"""The server's scheduler: named periodic jobs, and one-off jobs due at a time, on the injected clock.

`run_due(now)` starts every job that is due and returns once those runs have ended: a test calls it
after `FakeClock.advance`. `tokenim serve` runs `run_forever()`, a small asyncio loop that starts due
jobs as tasks (it never waits for one) and sleeps until the next is due, at most a second, or until
`wake()`. Requests are never blocked by a job: jobs run on the event loop beside them, so a job does
its network I/O through asyncio clients (aiosmtplib, httpx) and its database work in short transactions.

For the helpers building on it (recovery codes, waiting periods, reminders):
- A job is `async def job(now_ms: int)` (what it returns is ignored); `now_ms` is the time it was started for.
- `every(name, interval_ms, job)` runs a job periodically; `at(name, due_ms, job)` once (the same name again
  replaces it; `cancel(name)` drops it). A job never runs twice at once: while a run is in flight it is
  not started again.
- A job that raises is logged with its name and the exception's class only (a message may hold an
  address or a code), then retried: a periodic job after its interval doubled per consecutive failure (at
  most `MAX_BACKOFF_MS`, and never sooner than its interval), a one-off job after `ONE_OFF_RETRY_MS` doubled
  per failure, at most `ONE_OFF_ATTEMPTS` times. It never stops the loop or another job.
- The scheduler itself keeps nothing across a restart. Work that must survive one lives in a table that a
  periodic job reads back, as the outbox does (`server/outbox.py`: a row per message with its
  `next_attempt_at`, delivered by the periodic `outbox` job). A one-off job suits work whose loss in a
  restart is harmless, or which a periodic sweep of the database would redo anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tokenim.core.clock import Clock

log = logging.getLogger("tokenim.jobs")

JobFn = Callable[[int], Awaitable[object]]  # what it returns is ignored
MAX_BACKOFF_MS = 60 * 60 * 1000  # a failing periodic job is still tried at least hourly
ONE_OFF_RETRY_MS = 10_000
ONE_OFF_ATTEMPTS = 8
MAX_SLEEP_SECONDS = 1.0


@dataclass
class _Job:
    name: str
    fn: JobFn
    interval_ms: int | None  # None: a one-off job
    due_at: int
    failures: int = 0
    task: asyncio.Task[JobRun] | None = None


@dataclass(frozen=True, slots=True)
class JobRun:
    """What one run of a job came to: `error` is the exception's class name, None when it succeeded."""

    name: str
    error: str | None = None


class Scheduler:
    """Named jobs on the injected clock; see the module docstring for the rules jobs follow."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        self._wakeup = asyncio.Event()

    def every(self, name: str, interval_ms: int, fn: JobFn, *, first_at: int | None = None) -> None:
        """Run `fn` every `interval_ms`, first at `first_at` (default: now)."""
        if interval_ms <= 0:
            raise ValueError("a periodic job needs a positive interval")
        if name in self._jobs:
            raise ValueError(f"there is already a job named {name!r}")
        self._jobs[name] = _Job(name, fn, interval_ms, self._clock.now_ms() if first_at is None else first_at)
        self._wakeup.set()

    def at(self, name: str, due_ms: int, fn: JobFn) -> None:
        """Run `fn` once at `due_ms`; a one-off job of the same name is replaced (a periodic one is refused)."""
        old = self._jobs.get(name)
        if old is not None and old.interval_ms is not None:
            raise ValueError(f"{name!r} is a periodic job")
        self._jobs[name] = _Job(name, fn, None, due_ms)
        self._wakeup.set()

    def cancel(self, name: str) -> bool:
        """Forget a job (a run in flight finishes); False if there was none of that name."""
        return self._jobs.pop(name, None) is not None

    def wake(self, name: str | None = None) -> None:
        """Make job `name` due now (if it is not running), and have the loop look at once."""
        job = self._jobs.get(name) if name is not None else None
        if job is not None:
            job.due_at = min(job.due_at, self._clock.now_ms())
        self._wakeup.set()

    def due_at(self, name: str) -> int | None:
        """When job `name` runs next (None if there is no such job)."""
        job = self._jobs.get(name)
        return None if job is None else job.due_at

    def next_due(self) -> int | None:
        """The earliest time a job not already running falls due."""
        return min((j.due_at for j in self._jobs.values() if j.task is None), default=None)

    async def run_due(self, now: int) -> list[JobRun]:
        """Start every job due at `now` and wait for those runs to end; what each came to, by name."""
        tasks = self._start_due(now)
        return list(await asyncio.gather(*tasks)) if tasks else []

    async def run_forever(self) -> None:
        """The loop `tokenim serve` runs until cancelled: start what is due, then sleep until the next due
        time, at most a second, or until `wake()`."""
        try:
            while True:
                self._wakeup.clear()
                now = self._clock.now_ms()
                self._start_due(now)
                nxt = self.next_due()
                delay = MAX_SLEEP_SECONDS if nxt is None else min(MAX_SLEEP_SECONDS, max(0.0, (nxt - now) / 1000))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel runs in flight and wait for them to end."""
        running = [j.task for j in self._jobs.values() if j.task is not None]
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start_due(self, now: int) -> list[asyncio.Task[JobRun]]:
        started = []
        for job in list(self._jobs.values()):
            if job.task is None and job.due_at <= now:
                job.task = asyncio.get_running_loop().create_task(self._run(job, now), name=f"tokenim-job-{job.name}")
                started.append(job.task)
        return started

    async def _run(self, job: _Job, now: int) -> JobRun:
        try:
            await job.fn(now)
        except Exception as exc:
            return self._failed(job, now, type(exc).__name__)
        finally:
            job.task = None
            self._wakeup.set()  # the loop may sleep less now that this job is schedulable again
        job.failures = 0
        if job.interval_ms is None:
            self._drop(job)
        else:
            job.due_at = now + job.interval_ms
        return JobRun(job.name)

    def _failed(self, job: _Job, now: int, error: str) -> JobRun:
        job.failures += 1
        if job.interval_ms is None:
            if job.failures >= ONE_OFF_ATTEMPTS:
                log.error("job %s failed (%s) %d times: given up", job.name, error, job.failures)
                self._drop(job)
                return JobRun(job.name, error)
            delay = min(ONE_OFF_RETRY_MS * 2 ** (job.failures - 1), MAX_BACKOFF_MS)
        else:
            delay = max(job.interval_ms, min(job.interval_ms * 2**job.failures, MAX_BACKOFF_MS))
        job.due_at = now + delay
        log.warning("job %s failed (%s); next try in %d s", job.name, error, delay // 1000)
        return JobRun(job.name, error)

    def _drop(self, job: _Job) -> None:
        if self._jobs.get(job.name) is job:  # not if `at` replaced it meanwhile
            del self._jobs[job.name]
