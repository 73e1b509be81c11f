"""The one `Auditor`, and the walk that verifies the audit log's hash chain.

`Auditor.record` writes the entry inside the caller's transaction, so a change and its record commit
together or not at all. Its place in the chain (number, previous hash, hash) is given as the
transaction's last work before COMMIT (`Tx.before_commit`): the head row is locked there (FOR UPDATE
on PostgreSQL; SQLite serialises writers), so concurrent transactions extend the chain one after the
other and it never forks, and since nothing else is locked after it, no transaction can deadlock on it.

`ChainWalk` checks the rows in chain order and says where the chain breaks and how: an entry whose
contents no longer match its hash was changed; a number missing was removed; a row with a number
already taken, with none, or past the head the server recorded, was inserted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenim.core.clock import Clock
from tokenim.protocol.audit import (
    GENESIS_HASH,
    MAX_VERIFY_PROBLEMS,
    AuditHead,
    AuditProblem,
    AuditVerifyResponse,
    ProblemKind,
    audit_entry_hash,
)
from tokenim.server.services.common import NO_ORIGIN, Origin
from tokenim.server.storage.audit import AuditEvent, AuditStore, ChainHead
from tokenim.server.storage.database import Tx

_CHAIN_HOOK = "audit.chain"


def entry_hash(row: AuditEvent, seq: int, prev_hash: str) -> str:
    """The hash of a stored row at place `seq` after `prev_hash` (protocol.audit.audit_entry_hash)."""
    return audit_entry_hash(
        seq=seq,
        ts=row.ts,
        event=row.event,
        user_id=row.user_id,
        device_id=row.device_id,
        ip=row.ip,
        user_agent=row.user_agent,
        details=row.details,
        prev_hash=prev_hash,
    )


@dataclass
class _Unchained:
    """The rows one transaction wrote, to be chained just before it commits."""

    store: AuditStore
    ids: list[int] = field(default_factory=list)

    async def __call__(self, tx: Tx) -> None:
        rows = await self.store.unchained(tx, self.ids)  # a savepoint may have rolled some back
        if not rows:
            return
        head = await self.store.lock_head(tx)
        prev = head.hash if head is not None else GENESIS_HASH
        # Past any number already taken: a row put into the table behind the server's back with the next
        # number must neither stop the server from recording nor be taken for its entry (verification names it).
        seq = max(head.seq if head is not None else 0, await self.store.highest_seq(tx))
        for row in rows:
            seq += 1
            digest = entry_hash(row, seq, prev)
            await self.store.set_link(tx, row.id, seq, prev, digest)
            prev = digest
        await self.store.set_head(tx, head, ChainHead(seq, prev))


class Auditor:
    """The one place services record security-relevant events, inside the transaction that made them."""

    def __init__(self, store: AuditStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock

    async def record(
        self,
        tx: Tx,
        event: str,
        user_id: str | None,
        device_id: str | None,
        *,
        origin: Origin = NO_ORIGIN,
        **details: Any,
    ) -> None:
        """Append `event` (who, which device, where from, and small JSON `details`) to the log, in `tx`."""
        row = AuditEvent(self._clock.now_ms(), event, user_id, device_id, details, ip=origin.ip, user_agent=origin.user_agent)
        row_id = await self.store.append(tx, row)
        pending = tx.before_commit(_CHAIN_HOOK, _Unchained(self.store))
        assert isinstance(pending, _Unchained)
        pending.ids.append(row_id)


class ChainWalk:
    """Feed it the numbered rows in chain order (`add`), then `finish`: the problems, in order, each named
    by entry number and kind. A link that breaks between two entries that each match their own hash is
    judged: if it links to the entry two back, the one between was inserted; if the next row does not link
    to it either, the entry was replaced; otherwise the one before it was changed and its hash recomputed."""

    def __init__(self, head: ChainHead | None) -> None:
        self.head = head  # None: the head row itself is gone, so the newest entries can't be checked
        self.problems: list[AuditProblem] = []
        self.found = 0
        self.checked = 0
        self._expected = 1
        self._last: AuditEvent | None = None
        self._suspect: tuple[AuditEvent, AuditEvent | None] | None = None  # (row whose link broke, the row before it)
        self._replaced: int | None = None  # the row judged replaced: the next row's link to it is broken, as expected

    def _report(self, kind: ProblemKind, entry: int | None, row_id: int | None, message: str, count: int = 1) -> None:
        self.found += 1
        if len(self.problems) < MAX_VERIFY_PROBLEMS:
            self.problems.append(AuditProblem(entry=entry, kind=kind, row_id=row_id, count=count, message=message))

    def _removed(self, first: int, last: int, *, at_end: bool) -> None:
        what = f"Entry {first} was" if first == last else f"Entries {first} to {last} were"
        self._report("removed", first, None, f"{what} removed{' (the newest)' if at_end else ''}.", last - first + 1)

    def _rehashed(self, row: AuditEvent, why: str) -> None:
        self._report("changed", row.seq, row.id, f"Entry {row.seq} (row {row.id}) was changed and its hash recomputed: {why}.")

    def _settle(self, nxt: AuditEvent | None, *, gap: bool) -> None:
        """Judge the pending broken link by the row after it (`nxt`; None at the end, judged by the head)."""
        if self._suspect is None:
            return
        row, before = self._suspect
        self._suspect = None
        if before is not None and row.prev_hash == before.prev_hash:
            self._report(
                "inserted",
                before.seq,
                before.id,
                f"Row {before.id} was inserted as entry {before.seq}: entry {row.seq} links to the one before it.",
            )
            return
        if nxt is not None:
            replaced = not gap and nxt.prev_hash != row.hash
        else:
            replaced = self.head is not None and self.head.seq == row.seq and self.head.hash != row.hash
        if replaced or before is None:
            what = f"Entry {row.seq} (row {row.id}) was replaced: it links to neither neighbour."
            self._report("changed", row.seq, row.id, what)
            self._replaced = row.id
        else:
            self._rehashed(before, f"entry {row.seq} names another hash before it")

    def add(self, row: AuditEvent) -> None:
        """The next numbered row, in (seq, id) order."""
        assert row.seq is not None
        self.checked += 1
        if row.seq < self._expected:
            self._report("inserted", row.seq, row.id, f"Row {row.id} was inserted: entry number {row.seq} is already taken.")
            return
        if self.head is not None and row.seq > self.head.seq:
            self._report(
                "inserted",
                row.seq,
                row.id,
                f"Row {row.id} was inserted: it comes after the last entry the server wrote ({self.head.seq}).",
            )
            return
        gap = row.seq > self._expected
        if gap:
            self._removed(self._expected, row.seq - 1, at_end=False)
        self._settle(row, gap=gap)
        if row.hash != entry_hash(row, row.seq, row.prev_hash or ""):
            self._report("changed", row.seq, row.id, f"Entry {row.seq} (row {row.id}) was changed: it doesn't match its hash.")
        elif (
            not gap
            and row.prev_hash != (self._last.hash if self._last is not None else GENESIS_HASH)
            and (self._last is None or self._last.id != self._replaced)
        ):
            self._suspect = (row, self._last)
        self._expected = row.seq + 1
        self._last = row

    def unnumbered(self, count: int, rows: list[AuditEvent]) -> None:
        """Rows with no place in the chain (`count` of them, the first few given): the server numbers every
        row it writes before the transaction commits, so these came from elsewhere."""
        for row in rows:
            self._report("inserted", None, row.id, f"Row {row.id} was inserted: it has no place in the chain.")
        if count > len(rows):
            more = count - len(rows)
            self._report("inserted", None, None, f"{more} more rows have no place in the chain.", more)
        self.checked += count

    def finish(self) -> AuditVerifyResponse:
        """The report, once every row was added."""
        self._settle(None, gap=False)
        if self.head is None:
            self._report("removed", None, None, "The chain's head record was removed: the newest entries can't be checked.")
        elif self.head.seq >= self._expected:
            self._removed(self._expected, self.head.seq, at_end=True)
        elif (
            self._last is not None
            and self._last.hash != self.head.hash
            and (not self.problems or self.problems[-1].entry != self._last.seq)  # not already named
        ):
            self._rehashed(self._last, "the chain's head names another hash")
        head = AuditHead(seq=self.head.seq, hash=self.head.hash) if self.head is not None and self.head.seq else None
        return AuditVerifyResponse(
            ok=self.found == 0,
            entries=self.checked,
            head=head,
            problems=self.problems,
            truncated=self.found > len(self.problems),
        )


__all__ = ["Auditor", "ChainWalk", "entry_hash"]
