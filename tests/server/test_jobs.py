"""The scheduler (server/jobs.py) on a FakeClock: due jobs run once, a failing job is logged without its message
and retried with backoff, never stopping the others, and the loop `tokenim serve` runs never waits on a job."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tokenim.core.clock import FakeClock
from tokenim.server.jobs import MAX_BACKOFF_MS, ONE_OFF_ATTEMPTS, ONE_OFF_RETRY_MS, JobRun, Scheduler


class Recorder:
    """A job that notes the times it was run for, and fails while `failing` is set."""

    def __init__(self, failing: bool = False) -> None:
        self.runs: list[int] = []
        self.failing = failing
        self.ran = asyncio.Event()

    async def __call__(self, now: int) -> None:
        self.runs.append(now)
        self.ran.set()
        if self.failing:
            raise ValueError("the code 493817 was refused")  # what a careless job might put in a message


async def test_due_jobs_run_once_and_periodic_ones_again_after_their_interval() -> None:
    clock = FakeClock()
    jobs = Scheduler(clock)
    every, later = Recorder(), Recorder()
    t0 = clock.now_ms()
    jobs.every("tick", 1_000, every)
    jobs.at("later", t0 + 5_000, later)
    assert await jobs.run_due(t0) == [JobRun("tick")]
    assert await jobs.run_due(t0) == []  # not due again yet
    clock.advance(ms=999)
    assert await jobs.run_due(clock.now_ms()) == []
    clock.advance(ms=1)
    assert await jobs.run_due(clock.now_ms()) == [JobRun("tick")]
    clock.advance(seconds=5)
    assert sorted(r.name for r in await jobs.run_due(clock.now_ms())) == ["later", "tick"]
    clock.advance(seconds=60)
    await jobs.run_due(clock.now_ms())
    assert later.runs == [t0 + 6_000]  # a one-off job runs once
    assert every.runs == [t0, t0 + 1_000, t0 + 6_000, t0 + 66_000]  # late, it runs once, not once per missed tick
    assert jobs.due_at("later") is None and jobs.due_at("tick") == t0 + 67_000


async def test_a_failing_job_is_logged_without_its_message_retried_with_backoff_and_spares_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    jobs = Scheduler(clock)
    bad, good = Recorder(failing=True), Recorder()
    jobs.every("bad", 1_000, bad)
    jobs.every("good", 1_000, good)
    t0 = clock.now_ms()
    with caplog.at_level(logging.WARNING, logger="tokenim.jobs"):
        runs = await jobs.run_due(t0)
    assert sorted(runs, key=lambda r: r.name) == [JobRun("bad", "ValueError"), JobRun("good")]
    assert "bad" in caplog.text and "ValueError" in caplog.text and "493817" not in caplog.text
    # Each consecutive failure doubles the wait (2 s, 4 s, 8 s, …) up to the cap; the good job keeps its pace.
    assert jobs.due_at("bad") == t0 + 2_000
    clock.advance(seconds=1)
    assert await jobs.run_due(clock.now_ms()) == [JobRun("good")]
    clock.advance(seconds=1)
    await jobs.run_due(clock.now_ms())
    assert jobs.due_at("bad") == clock.now_ms() + 4_000
    bad.failing = False
    clock.advance(seconds=4)
    assert JobRun("bad") in await jobs.run_due(clock.now_ms())
    assert jobs.due_at("bad") == clock.now_ms() + 1_000  # success: back to its interval
    assert len(good.runs) == 4

    for _ in range(30):  # however long it keeps failing, it is tried at least every MAX_BACKOFF_MS
        bad.failing = True
        clock.advance(ms=MAX_BACKOFF_MS)
        await jobs.run_due(clock.now_ms())
    assert jobs.due_at("bad") == clock.now_ms() + MAX_BACKOFF_MS


async def test_a_failing_one_off_job_is_retried_then_given_up(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    jobs = Scheduler(clock)
    once = Recorder(failing=True)
    jobs.at("once", clock.now_ms(), once)
    await jobs.run_due(clock.now_ms())
    assert jobs.due_at("once") == clock.now_ms() + ONE_OFF_RETRY_MS
    with caplog.at_level(logging.ERROR, logger="tokenim.jobs"):
        for _ in range(ONE_OFF_ATTEMPTS):
            clock.advance(ms=MAX_BACKOFF_MS)
            await jobs.run_due(clock.now_ms())
    assert len(once.runs) == ONE_OFF_ATTEMPTS and jobs.due_at("once") is None
    assert "given up" in caplog.text and "493817" not in caplog.text


async def test_a_one_off_job_can_be_replaced_or_cancelled_and_a_name_is_periodic_or_not() -> None:
    clock = FakeClock()
    jobs = Scheduler(clock)
    first, second = Recorder(), Recorder()
    jobs.at("remind", clock.now_ms() + 10, first)
    jobs.at("remind", clock.now_ms() + 20, second)  # the same name again moves it
    clock.advance(ms=20)
    await jobs.run_due(clock.now_ms())
    assert (first.runs, len(second.runs)) == ([], 1)
    jobs.at("gone", clock.now_ms(), first)
    assert jobs.cancel("gone") and not jobs.cancel("gone")
    await jobs.run_due(clock.now_ms())
    assert first.runs == []
    jobs.every("tick", 1_000, first)
    with pytest.raises(ValueError):
        jobs.every("tick", 1_000, first)
    with pytest.raises(ValueError):
        jobs.at("tick", clock.now_ms(), first)


async def test_the_loop_never_waits_on_a_job_and_survives_a_failing_one() -> None:
    """What `tokenim serve` runs: a job stuck on the network does not hold up the others, nor run twice at once."""
    clock = FakeClock()
    jobs = Scheduler(clock)
    stuck_started, release = asyncio.Event(), asyncio.Event()
    stuck_runs = 0

    async def stuck(now: int) -> None:
        nonlocal stuck_runs
        stuck_runs += 1
        stuck_started.set()
        await release.wait()

    tick, bad = Recorder(), Recorder(failing=True)
    jobs.every("stuck", 1_000, stuck)
    jobs.every("bad", 1_000, bad)
    jobs.every("tick", 1_000, tick)
    loop = asyncio.get_running_loop().create_task(jobs.run_forever())
    try:
        await asyncio.wait_for(stuck_started.wait(), 10)
        await asyncio.wait_for(tick.ran.wait(), 10)
        await asyncio.wait_for(bad.ran.wait(), 10)
        for _ in range(3):  # the clock moves on: tick runs each time, the stuck job is not started again
            tick.ran.clear()
            clock.advance(seconds=8)
            jobs.wake()
            await asyncio.wait_for(tick.ran.wait(), 10)
        assert stuck_runs == 1 and len(tick.runs) == 4 and len(bad.runs) >= 2
        assert not loop.done()
        release.set()
        jobs.wake("stuck")
        await asyncio.wait_for(_until(lambda: stuck_runs == 2), 10)
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def _until(condition: object) -> None:
    assert callable(condition)
    while not condition():
        await asyncio.sleep(0.01)
