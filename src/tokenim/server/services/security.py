"""A user's security review: their recent logins and activity, read from their audit records, and flags
for what looks wrong. Every flag is derived from audit events by name, so a feature that records the
events below (2FA, reporting a device lost, account recovery) shows in the review without a change here.
"""

from __future__ import annotations

from typing import Any

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.audit import MAX_REVIEW_DAYS, ReviewActivity, ReviewFlag, ReviewLogin, SecurityReviewResponse
from tokenim.server.services.auth import LOGIN, LOGIN_FAILED
from tokenim.server.services.common import Context, Requester
from tokenim.server.storage.audit import AuditEvent

DAY_MS = 86_400_000
MAX_REVIEW_EVENTS = 5000  # the newest records read for one review
MAX_LISTED = 50  # logins and activity shown, each

LOGIN_LOST_DEVICE = "login.lost_device"  # a device reported lost tried to log in
LOGIN_EVENTS = (LOGIN, LOGIN_FAILED, LOGIN_LOST_DEVICE)
# Records whose address counts as known for the user: a login from an address first seen later is flagged.
KNOWN_ADDRESS_EVENTS = (LOGIN, "account.registered", "device.added")
# Failures that count toward a burst: wrong logins, wrong 2FA codes, wrong recovery codes or answers,
# refused master-key adds.
FAILURE_EVENTS = (LOGIN_FAILED, LOGIN_LOST_DEVICE, "2fa.failed", "recovery.failed", "device.add_refused")
BURST_COUNT = 5
BURST_WINDOW_MS = 10 * 60_000
NEW_DEVICE_EVENTS = ("device.added", "recovery.completed")
RECOVERY_EVENTS = ("recovery.started", "recovery.cancelled", "recovery.completed")


def _where(ip: str | None) -> str:
    return f" from {ip}" if ip else ""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def failure_bursts(failures: list[AuditEvent]) -> list[ReviewFlag]:
    """Runs of at least BURST_COUNT failures with each BURST_COUNT in a row inside BURST_WINDOW_MS, one flag
    per run (its first failure's time and how many it holds). `failures` oldest first."""
    flags: list[ReviewFlag] = []
    i = 0
    while i + BURST_COUNT <= len(failures):
        if failures[i + BURST_COUNT - 1].ts - failures[i].ts > BURST_WINDOW_MS:
            i += 1
            continue
        end = i + BURST_COUNT  # extend the run while the next failure keeps a full window dense
        while end < len(failures) and failures[end].ts - failures[end - BURST_COUNT + 1].ts <= BURST_WINDOW_MS:
            end += 1
        run = failures[i:end]
        kinds = sorted({f.event for f in run})
        ips = sorted({f.ip for f in run if f.ip})
        flags.append(
            ReviewFlag(
                kind="failed_burst",
                ts=run[0].ts,
                count=len(run),
                ip=ips[0] if len(ips) == 1 else None,
                message=f"{len(run)} failed attempts ({', '.join(kinds)}) within "
                f"{max(1, (run[-1].ts - run[0].ts) // 60_000)} minutes"
                + (f", from {', '.join(ips[:3])}{' and others' if len(ips) > 3 else ''}" if ips else "")
                + ".",
            )
        )
        i = end
    return flags


class SecurityService:
    """Builds a user's review from their own audit records only."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def access_review(self, requester: Requester, days: int = 30) -> SecurityReviewResponse:
        """The requester's logins and activity of the last `days` days, newest first, with what looks wrong."""
        if not 1 <= days <= MAX_REVIEW_DAYS:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"days must be between 1 and {MAX_REVIEW_DAYS}.")
        since = self._ctx.clock.now_ms() - days * DAY_MS
        store = self._ctx.auditor.store
        uid = requester.user_id
        async with self._ctx.db.read() as tx:
            events = await store.user_since(tx, uid, since, MAX_REVIEW_EVENTS)
            ips = {e.ip for e in events if e.event == LOGIN and e.ip}
            first_seen = await store.first_seen(tx, uid, KNOWN_ADDRESS_EVENTS, ips)
            recovery = await store.latest_of(tx, uid, RECOVERY_EVENTS)
        flags = self._flags(events, first_seen)
        if recovery is not None and recovery.event == "recovery.started":
            flags.append(
                ReviewFlag(
                    kind="recovery_in_progress",
                    ts=recovery.ts,
                    ip=recovery.ip,
                    message=f"An account recovery was started{_where(recovery.ip)} and is in progress: if you did "
                    "not start it, cancel it from one of your devices.",
                )
            )
        flags.sort(key=lambda f: f.ts, reverse=True)
        logins = [
            ReviewLogin(
                ts=e.ts,
                outcome="success" if e.event == LOGIN else "failed",
                reason=None if e.event == LOGIN else (_text(e.details.get("reason")) or e.event.removeprefix("login.")),
                event=e.event,
                device_id=e.device_id,
                ip=e.ip,
                user_agent=e.user_agent,
            )
            for e in events
            if e.event in LOGIN_EVENTS
        ]
        activity = [
            ReviewActivity(ts=e.ts, event=e.event, device_id=e.device_id, ip=e.ip, details=e.details)
            for e in events
            if e.event not in LOGIN_EVENTS
        ]
        return SecurityReviewResponse(since=since, logins=logins[:MAX_LISTED], activity=activity[:MAX_LISTED], flags=flags)

    @staticmethod
    def _flags(events: list[AuditEvent], first_seen: dict[str, int]) -> list[ReviewFlag]:
        """The flags read from single events (newest first in `events`), and the bursts of failures."""
        flags: list[ReviewFlag] = []
        for e in events:
            device = e.device_id or "?"
            if e.event in NEW_DEVICE_EVENTS:
                how = "by account recovery" if e.event == "recovery.completed" else "a new device"
                flags.append(
                    ReviewFlag(
                        kind="new_device",
                        ts=e.ts,
                        device_id=e.device_id,
                        ip=e.ip,
                        message=f"Device {device} was added ({how}){_where(e.ip)}.",
                    )
                )
            elif e.event == LOGIN and e.ip and first_seen.get(e.ip) == e.id:
                flags.append(
                    ReviewFlag(
                        kind="new_ip",
                        ts=e.ts,
                        device_id=e.device_id,
                        ip=e.ip,
                        message=f"A login on device {device} from an address not seen before: {e.ip}.",
                    )
                )
            elif e.event == LOGIN_LOST_DEVICE:
                flags.append(
                    ReviewFlag(
                        kind="lost_device_login",
                        ts=e.ts,
                        device_id=e.device_id,
                        ip=e.ip,
                        message=f"Device {device}, reported lost, tried to log in{_where(e.ip)}.",
                    )
                )
            elif e.event == LOGIN_FAILED and e.details.get("reason") == "device_revoked":
                flags.append(
                    ReviewFlag(
                        kind="revoked_device_login",
                        ts=e.ts,
                        device_id=e.device_id,
                        ip=e.ip,
                        message=f"Device {device}, revoked, tried to log in{_where(e.ip)}.",
                    )
                )
        failures = [e for e in reversed(events) if e.event in FAILURE_EVENTS]
        return flags + failure_bursts(failures)


__all__ = ["SecurityService", "failure_bursts"]
