"""The event writer: one task per server process that commits event-producing work in batches.

Work is submitted as jobs; the writer runs as many queued jobs as it can in one transaction,
commits, and only then acknowledges them and publishes their events, in stream order. If a batch
fails, each of its jobs is retried alone, so one bad job can't fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tokenim.core.clock import Clock
from tokenim.core.errors import TokenIMError
from tokenim.server.realtime.hub import Hub
from tokenim.server.storage.database import Database, Tx, take_record
from tokenim.server.storage.events import EventRow, EventStore, ToDeviceRow
from tokenim.server.storage.rooms import RoomStore

T = TypeVar("T")
MAX_BATCH = 512


def new_event_id() -> str:
    return "$" + secrets.token_urlsafe(18)


@dataclass
class Batch:
    """What a job sees: the open transaction, the time, and helpers that allocate stream positions."""

    tx: Tx
    now: int
    _events: EventStore
    _rooms: RoomStore
    careful: bool = False  # set when jobs run one by one after a batch failed: check, don't assume
    _pos: int | None = None
    _seqs: dict[str, int] = field(default_factory=dict)
    _known_seqs: dict[str, int] = field(default_factory=dict)
    _rows: list[EventRow] = field(default_factory=list)
    published: list[tuple[EventRow, Collection[str]]] = field(default_factory=list)
    to_device: list[ToDeviceRow] = field(default_factory=list)

    async def add_event(
        self,
        room_id: str,
        type: str,
        sender: str,
        content: dict[str, Any],
        *,
        sender_device: str | None = None,
        txn_id: str | None = None,
    ) -> EventRow:
        """Add an event with the next stream position and room sequence number (written at flush)."""
        if self._pos is None:
            self._pos = await self._events.take_stream_pos(self.tx)
        if room_id not in self._seqs:
            known = self._known_seqs.get(room_id)
            self._seqs[room_id] = known if known is not None else await self._rooms.take_room_seq(self.tx, room_id)
        self._pos += 1
        self._seqs[room_id] += 1
        row = EventRow(
            self._pos, new_event_id(), room_id, self._seqs[room_id], type, sender, sender_device, txn_id, content, self.now
        )
        self._rows.append(row)  # inserted together in flush(): one statement per batch
        return row

    def publish(self, event: EventRow, recipients: Collection[str]) -> None:
        """Deliver `event` to these users once the batch commits."""
        self.published.append((event, recipients))

    def mark(self) -> tuple[int | None, dict[str, int], int, int, int]:
        """Where the batch stands, so a refused job's in-memory effects can be undone."""
        return self._pos, dict(self._seqs), len(self._rows), len(self.published), len(self.to_device)

    def restore(self, mark: tuple[int | None, dict[str, int], int, int, int]) -> None:
        self._pos, self._seqs = mark[0], mark[1]
        del self._rows[mark[2] :], self.published[mark[3] :], self.to_device[mark[4] :]

    async def flush(self) -> None:
        if not self._rows:
            return
        await self._events.insert_events(self.tx, self._rows)
        assert self._pos is not None
        await self._events.set_stream_pos(self.tx, self._pos)
        await self._rooms.set_room_seqs(self.tx, self._seqs)


Job = Callable[[Batch], Awaitable[T]]
# Writes `tokenim.device_list` events for (user id, device id, change) into the batch changing the device.
AnnounceDevice = Callable[[Batch, str, str, str], Awaitable[None]]


@dataclass
class _Pending(Generic[T]):
    job: Job[T]
    future: asyncio.Future[T]
    pure: bool = False  # the job writes only through Batch.add_event (deferred to flush)


class EventWriter:
    """Serialises event writes in this process; `submit` returns once the job's work is committed."""

    def __init__(
        self,
        db: Database,
        events: EventStore,
        rooms: RoomStore,
        hub: Hub,
        clock: Clock,
        on_rollback: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._on_rollback = on_rollback
        self._events = events
        self._rooms = rooms
        self._hub = hub
        self._clock = clock
        self._queue: asyncio.Queue[_Pending[Any]] = asyncio.Queue()
        # This process is the only writer of events (single node), so the counters it committed last
        # are still the truth: no need to read them back for every batch. A rollback forgets them.
        self._pos: int | None = None
        self._seqs: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def submit(self, job: Job[T], *, pure: bool = False) -> T:
        """Run `job` in the next batch; raises what the job raised.

        `pure`: the job writes nothing itself, only through `Batch.add_event`, so a refusal it raises can
        be undone in memory; other jobs run inside a savepoint. Either way one refused job does not roll
        back the rest of its batch.
        """
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(job, future, pure))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if not await self._commit(batch, careful=False):
                # Something in the batch failed and rolled it all back: run each job alone, carefully.
                for item in batch:
                    await self._commit([item], careful=True)

    async def _commit(self, items: list[_Pending[Any]], *, careful: bool) -> bool:
        """Run the jobs in one transaction. False if it rolled back and the jobs should be retried one by one."""
        live = [item for item in items if not item.future.done()]
        if not live:
            return True
        done: list[tuple[_Pending[Any], Any, TokenIMError | None]] = []
        try:
            async with self._db.write() as tx:
                batch = Batch(
                    tx, self._clock.now_ms(), self._events, self._rooms, careful=careful, _pos=self._pos, _known_seqs=self._seqs
                )
                for item in live:
                    if careful:
                        done.append((item, await item.job(batch), None))
                        continue
                    mark = batch.mark()
                    try:
                        if item.pure:
                            value = await item.job(batch)
                        else:
                            async with tx.savepoint():
                                value = await item.job(batch)
                    except TokenIMError as refused:  # a refusal: undo this job only
                        batch.restore(mark)
                        self._on_rollback()
                        record = take_record(refused)  # what the refusal must leave behind (a counted failure)
                        if record is not None:
                            await record(tx)
                        done.append((item, None, refused))
                        continue
                    done.append((item, value, None))
                await batch.flush()
        except Exception as exc:
            self._pos, self._seqs = None, {}
            self._on_rollback()
            if not careful:
                return False
            if not live[0].future.done():
                live[0].future.set_exception(exc)
            return True
        self._pos = batch._pos
        if len(self._seqs) > 100_000:
            self._seqs.clear()
        self._seqs.update(batch._seqs)
        # Committed: acknowledge, then publish in stream order.
        for item, value, refusal in done:
            if item.future.done():
                continue
            if refusal is not None:
                item.future.set_exception(refusal)
            else:
                item.future.set_result(value)
        self._hub.publish_events(batch.published)
        self._hub.publish_to_device(batch.to_device)
        return True
