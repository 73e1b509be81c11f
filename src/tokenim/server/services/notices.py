"""Security notices: a short mail telling a user that something happened to their account which, if it was
not them, they must act on: a new device, a key reset or a recovery started, 2FA turned off, a device
reported lost.

For the helpers building on it: inside the transaction that makes the change, call
`await notices.notify(tx, user_id, NoticeKind.X, {...details})`. The mail is queued in that transaction
(server/outbox.py), so a change that rolls back tells nobody, and goes out after commit. A notice is a
courtesy, not a gate: on a server without mail, or for a user without an address, `notify` queues
nothing, returns False, and the change goes ahead (the audit log is the record).

Who is told: `recipients(tx, user_id)`, by default the address the user registered with; the recovery
work passes its own function (a verified recovery address, say) to the constructor.

Details each kind reads (all optional, strings; anything else is ignored): `device_id` (the device added,
reported lost), `by_device` (the device that did it), `method` for a new device (`device`: added by one of
their devices, which is also how `devices link` ends; `master_key`: by the master key, `keys import`),
`until` for a recovery (when it completes, `YYYY-MM-DD HH:MM UTC`). Every value is shown escaped
(`core.names.printable`) and the mails name no secret: no code, no token, no key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum

from tokenim.core.names import printable
from tokenim.server.outbox import Outbox
from tokenim.server.services.common import Context
from tokenim.server.storage.database import Tx

Recipients = Callable[[Tx, str], Awaitable[list[str]]]


class NoticeKind(StrEnum):
    NEW_DEVICE = "new_device"
    KEY_RESET = "key_reset"
    RECOVERY_STARTED = "recovery_started"
    TWO_FACTOR_DISABLED = "2fa_disabled"
    DEVICE_REPORTED_LOST = "device_reported_lost"


_SUBJECTS = {
    NoticeKind.NEW_DEVICE: "New device on your TokenIM account",
    NoticeKind.KEY_RESET: "Your TokenIM key was reset",
    NoticeKind.RECOVERY_STARTED: "Recovery of your TokenIM account has started",
    NoticeKind.TWO_FACTOR_DISABLED: "Two-factor authentication was turned off on your TokenIM account",
    NoticeKind.DEVICE_REPORTED_LOST: "A device of your TokenIM account was reported lost",
}
_IF_NOT_YOU = {
    NoticeKind.NEW_DEVICE: (
        "If it was not you, someone holds your master key or one of your devices: from a device you trust,\n"
        "run `tokenim devices` to see your devices, `tokenim devices revoke DEVICE` to revoke this one,\n"
        "then `tokenim keys rotate`."
    ),
    NoticeKind.KEY_RESET: (
        "If it was not you, your account has been taken over: contact your TokenIM admin at once, and\n"
        "warn the people you talk to not to trust the new key until you have checked it with them."
    ),
    NoticeKind.RECOVERY_STARTED: (
        "If it was not you, stop it now from any of your devices: `tokenim recovery cancel`,\nand tell your TokenIM admin."
    ),
    NoticeKind.TWO_FACTOR_DISABLED: (
        "If it was not you, someone can use one of your devices: from a device you trust, revoke the\n"
        "devices you do not recognise (`tokenim devices`), turn two-factor authentication on again,\n"
        "and tell your TokenIM admin."
    ),
    NoticeKind.DEVICE_REPORTED_LOST: (
        "If it was not you, one of your other devices is in someone else's hands: check your devices\n"
        "(`tokenim devices`) and tell your TokenIM admin."
    ),
}


def utc_minute(ms: int) -> str:
    """A time as people read it in a mail: `2027-01-15 08:00 UTC`."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


class SecurityNotifier:
    """Queues a security notice mail in the caller's transaction; see the module docstring."""

    def __init__(self, ctx: Context, outbox: Outbox, recipients: Recipients | None = None) -> None:
        self._ctx = ctx
        self._outbox = outbox
        self._recipients = recipients or self.registered_address

    async def registered_address(self, tx: Tx, user_id: str) -> list[str]:
        """The address the user gave when registering, if any."""
        user = await self._ctx.accounts.get_user(tx, user_id)
        return [user.email] if user is not None and user.email else []

    async def notify(self, tx: Tx, user_id: str, kind: NoticeKind, details: Mapping[str, str] | None = None) -> bool:
        """Queue the notice for every recipient of `user_id` in `tx`; False if no mail was queued."""
        if not self._outbox.email_enabled:
            return False
        addresses = await self._recipients(tx, user_id)
        body = self.body(user_id, kind, details or {}, self._ctx.clock.now_ms())
        for address in addresses:
            await self._outbox.enqueue_mail(tx, address, _SUBJECTS[kind], body, kind=f"security.{kind}", user_id=user_id)
        return bool(addresses)

    def body(self, user_id: str, kind: NoticeKind, details: Mapping[str, str], now: int) -> str:
        """The mail's text: what happened, when, and what to do if it was not the user."""
        shown = {k: printable(v, 100) for k, v in details.items()}
        where = f"your account {printable(user_id, 100)} on {printable(self._ctx.server_name, 100)}"
        device = shown.get("device_id", "")
        by = f" by your device {shown['by_device']}" if "by_device" in shown else ""
        what = {
            NoticeKind.NEW_DEVICE: f"A new device{' ' + device if device else ''} was added to {where}"
            + (" with your master key" if shown.get("method") == "master_key" else by),
            NoticeKind.KEY_RESET: f"The master key of {where} was replaced by a new one through account recovery",
            NoticeKind.RECOVERY_STARTED: f"Someone started to recover {where}. Unless it is stopped, a new master key "
            f"replaces yours{' at ' + shown['until'] if 'until' in shown else ''} and every device of yours is signed out",
            NoticeKind.TWO_FACTOR_DISABLED: f"Two-factor authentication was turned off for {where}{by}",
            NoticeKind.DEVICE_REPORTED_LOST: f"Your device {device or '(unnamed)'} was reported lost{by} and revoked: "
            "it can no longer be used with your account",
        }[kind]
        return (
            f"{what}.\nWhen: {utc_minute(now)}.\n\n"
            f"If it was you, there is nothing to do.\n{_IF_NOT_YOU[kind]}\n\n"
            f"-- TokenIM on {printable(self._ctx.server_name, 100)}. This mail is automatic; replies are not read.\n"
        )
