"""The outbox: mail and text messages are enqueued inside the transaction of the change that causes them
and delivered by the scheduler after commit, with retries, never while a request waits.

For the helpers building on it (email and phone verification codes, recovery notices):
- Inside your transaction: `await outbox.enqueue_mail(tx, to, subject, body, kind="recovery.email_code",
  user_id=uid)` or `enqueue_sms(tx, to, text, ...)`. A rolled-back transaction sends nothing. Check
  `outbox.require_email()` / `require_sms()` first where the user needs the message (a code): with no
  `smtp_host` (or `sms_provider = "none"`) it raises `email_unavailable` / `sms_unavailable` (503) with a
  sentence; a notice that is merely nice to have (server/services/notices.py) checks `email_enabled`.
- The recipient, subject and text are sealed under the server key (server/secret_box.py) with the row's
  channel, kind and user as associated data, since a message may carry a one-time code; the row is deleted
  once sent. Nothing here logs an address, a subject or a text: logs name the row, its kind and its user.
- `deliver_due(now)` is the periodic `outbox` job (every `POLL_MS`; `Scheduler.wake(Outbox.JOB)` runs it
  at once). It leases due rows (moves them `lease_ms` ahead, so two servers on one database never send the
  same row at once), sends each, and deletes it; a failure is retried after `RETRY_BASE_MS` doubled per
  attempt up to `RETRY_MAX_MS`, and a message still unsent a day (`GIVE_UP_MS`) after it was enqueued is
  dropped, logged and audited (`outbox.undelivered`). Delivery is at least once: a server that dies
  between the SMTP server's "250 OK" and the delete sends that message again when the lease ends.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.secret_box import SecretBox
from tokenim.server.services.audit import Auditor
from tokenim.server.storage.database import Database, Tx
from tokenim.server.storage.outbox import OutboxRow, OutboxStore, PendingMessage

log = logging.getLogger("tokenim.outbox")

POLL_MS = 1_000
RETRY_BASE_MS = 30_000
RETRY_MAX_MS = 60 * 60 * 1000
GIVE_UP_MS = 24 * 60 * 60 * 1000
BATCH = 50


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    to: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    to: str
    text: str


class DeliveryFailed(Exception):
    """A transport could not hand a message over; `reason` is safe to log (a kind, a status: never content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MailTransport(Protocol):
    async def send(self, mail: OutgoingMail, now_ms: int) -> None:
        """Hand the mail to the SMTP server, or raise (DeliveryFailed with a loggable reason)."""
        ...


class SmsTransport(Protocol):
    async def send(self, sms: OutgoingSms) -> None:
        """Hand the text to the provider, or raise (DeliveryFailed with a loggable reason)."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one `deliver_due` run did."""

    sent: int = 0
    retried: int = 0
    given_up: int = 0


def retry_delay_ms(attempts: int) -> int:
    """How long after failed attempt number `attempts` (1, 2, …) the next is made: 30 s doubling, at most 1 h."""
    return int(min(RETRY_BASE_MS * 2 ** min(attempts - 1, 20), RETRY_MAX_MS))


def _purpose(channel: str, kind: str, user_id: str | None) -> str:
    return f"outbox:{channel}:{kind}:{user_id or ''}"


def _one_line(*texts: str) -> None:
    if any("\r" in t or "\n" in t for t in texts):
        raise ValueError("a recipient or subject must be one line")


class Outbox:
    """Enqueue inside a transaction; deliver from the scheduler. See the module docstring."""

    JOB = "outbox"

    def __init__(
        self,
        db: Database,
        clock: Clock,
        box: SecretBox,
        auditor: Auditor,
        *,
        mail: MailTransport | None,
        sms: SmsTransport | None,
        lease_ms: int = 5 * 60 * 1000,
        store: OutboxStore | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._box = box
        self._auditor = auditor
        self._mail = mail
        self._sms = sms
        self._lease_ms = lease_ms
        self._store = store or OutboxStore()

    @property
    def email_enabled(self) -> bool:
        """Whether the server is configured to send mail (`smtp_host`)."""
        return self._mail is not None

    @property
    def sms_enabled(self) -> bool:
        """Whether the server is configured to send text messages (`sms_provider`)."""
        return self._sms is not None

    def require_email(self) -> None:
        """Refuse, with a sentence for the user, an operation that needs mail on a server that has none."""
        if self._mail is None:
            raise TokenIMError(
                ErrorCode.EMAIL_UNAVAILABLE, "This server cannot send email (no SMTP server is configured): ask its admin."
            )

    def require_sms(self) -> None:
        """Refuse, with a sentence for the user, an operation that needs a text message on a server that has none."""
        if self._sms is None:
            raise TokenIMError(
                ErrorCode.SMS_UNAVAILABLE, "This server cannot send text messages (no SMS provider is configured): ask its admin."
            )

    async def enqueue_mail(self, tx: Tx, to: str, subject: str, body: str, *, kind: str, user_id: str | None = None) -> None:
        """Queue a mail in `tx`: it goes out after commit, and never if `tx` rolls back."""
        self.require_email()
        _one_line(to, subject)
        await self._enqueue(tx, Channel.EMAIL, kind, user_id, {"to": to, "subject": subject, "body": body})

    async def enqueue_sms(self, tx: Tx, to: str, text: str, *, kind: str, user_id: str | None = None) -> None:
        """Queue a text message in `tx`: it goes out after commit, and never if `tx` rolls back."""
        self.require_sms()
        _one_line(to)
        await self._enqueue(tx, Channel.SMS, kind, user_id, {"to": to, "text": text})

    async def _enqueue(self, tx: Tx, channel: Channel, kind: str, user_id: str | None, content: dict[str, str]) -> None:
        sealed = self._box.encrypt(json.dumps(content).encode(), _purpose(channel, kind, user_id))
        await self._store.insert(tx, channel, kind, user_id, sealed, self._clock.now_ms())

    async def pending(self) -> list[PendingMessage]:
        """What is waiting to go out (kind, user, attempts, next attempt, last failure), never its content."""
        async with self._db.read() as tx:
            return await self._store.pending(tx)

    async def deliver_due(self, now: int) -> DeliveryReport:
        """Send what is due at `now`: the scheduler's `outbox` job."""
        async with self._db.read() as tx:
            if not await self._store.any_due(tx, now):
                return DeliveryReport()
        async with self._db.write() as tx:
            rows = await self._store.lease_due(tx, now, now + self._lease_ms, BATCH)
        sent = retried = given_up = 0
        for row in rows:
            outcome = await self._deliver(row, now)
            sent += outcome == "sent"
            retried += outcome == "retried"
            given_up += outcome == "given_up"
        return DeliveryReport(sent, retried, given_up)

    async def _deliver(self, row: OutboxRow, now: int) -> str:
        try:
            content = json.loads(self._box.decrypt(row.sealed, _purpose(row.channel, row.kind, row.user_id)))
        except (TokenIMError, ValueError):  # the box logged why (another key, changed bytes), never what it held
            log.error("outbox message %d (%s) cannot be read: dropped", row.id, row.kind)
            return await self._give_up(row, "unreadable")
        try:
            await self._send(row.channel, content, now)
        except Exception as exc:  # whatever the transport raised, the message is kept and retried
            reason = exc.reason if isinstance(exc, DeliveryFailed) else type(exc).__name__
            return await self._failed(row, now, reason)
        async with self._db.write() as tx:
            await self._store.delete(tx, row.id)
        log.info("outbox message %d (%s %s for %s) sent", row.id, row.channel, row.kind, row.user_id or "-")
        return "sent"

    async def _send(self, channel: str, content: dict[str, str], now: int) -> None:
        if channel == Channel.EMAIL:
            if self._mail is None:
                raise DeliveryFailed("mail is not configured")
            await self._mail.send(OutgoingMail(content["to"], content["subject"], content["body"]), now)
        elif channel == Channel.SMS:
            if self._sms is None:
                raise DeliveryFailed("sms is not configured")
            await self._sms.send(OutgoingSms(content["to"], content["text"]))
        else:
            raise DeliveryFailed(f"unknown channel {channel!r}")

    async def _failed(self, row: OutboxRow, now: int, reason: str) -> str:
        attempts = row.attempts + 1
        if now - row.created_at >= GIVE_UP_MS:
            log.error(
                "outbox message %d (%s %s for %s) not delivered in a day, %d attempts (last: %s): given up",
                row.id,
                row.channel,
                row.kind,
                row.user_id or "-",
                attempts,
                reason,
            )
            return await self._give_up(row, reason)
        delay = retry_delay_ms(attempts)
        async with self._db.write() as tx:
            await self._store.retry_at(tx, row.id, attempts, now + delay, reason)
        log.warning(
            "outbox message %d (%s %s) failed (%s), attempt %d; next in %d s",
            row.id,
            row.channel,
            row.kind,
            reason,
            attempts,
            delay // 1000,
        )
        return "retried"

    async def _give_up(self, row: OutboxRow, reason: str) -> str:
        async with self._db.write() as tx:
            await self._store.delete(tx, row.id)
            await self._auditor.record(
                tx, "outbox.undelivered", row.user_id, None, channel=row.channel, kind=row.kind, reason=reason
            )
        return "given_up"
