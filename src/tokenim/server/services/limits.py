"""The one limiter for guessing and flooding, per account and per client address (both apply).

Every service that takes a guessable secret (a login, a 2FA code, a recovery code, a security answer, an
emailed or texted code, an invite) or that a user could flood (login challenges, to-device messages, key
claims) goes through `ctx.limiter`. Counters live in the database (`rate_limits`, behind the small
`Counters` interface), so every server node sharing it sees the same counts; time comes from the injected
clock. Settings: `[limits]` in docs/admin.md.

Guessing: check first, then count each failure; after `per_account` (or `per_address`) failures within
the window the account (or address) is locked out for `lockout_seconds`, and `check` answers 429
`rate_limited` with `details.retry_after_ms`. A success may forget the account's failures (never the
address's: logging in to one account must not clear the trail of guesses at others):

    async with ctx.db.write() as tx:
        await ctx.limiter.check(tx, Kind.TOTP, user_id=uid, address=address)
        ok = code_matches(...)
        if ok:
            await ctx.limiter.succeeded(tx, Kind.TOTP, user_id=uid)
        else:
            strike = await ctx.limiter.failed(tx, Kind.TOTP, user_id=uid, address=address)
    if not ok:  # raise only after the block: the failure must be committed to count
        raise TokenIMError(ErrorCode.…, f"That code is wrong ({strike.remaining} tries left).")

A failure raised inside the transaction would roll its count back. Where the refusal is raised deep inside
(a validation error), let it propagate and count it in a transaction of its own, after the first one ended:
`await ctx.limiter.record_failure(Kind.INVITE, address=address)`. (Never while a write transaction is open:
on SQLite that would wait for itself.)

Flooding: `await ctx.limiter.hit(tx, Kind.TO_DEVICE, user_id=uid, amount=n)` counts `n` and refuses (429,
`retry_after_ms` until the minute's window ends) when that would pass the quota; a refused hit raises
inside the caller's transaction, so it rolls back and uses up nothing.

An address is counted by its IP (IPv6 by its /64, which one client usually holds whole), kept only as a
SHA-256 under a fixed label: a pseudonym, not a secret (the audit log keeps addresses anyway), and gone
when its counter expires. An empty address (a service called without HTTP) is not counted.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from tokenim.core.clock import Clock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.storage.database import Database, Tx
from tokenim.server.storage.limits import Counter, Counters, CounterStore

PURGE_EVERY_MS = 60_000


class Kind(StrEnum):
    """What is being counted. Values are stored: never rename one."""

    LOGIN = "login"  # failed logins (bad signature, unknown challenge)
    LOGIN_CHALLENGE = "login_challenge"  # challenges issued, a flood limit per address
    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"
    SECURITY_ANSWER = "security_answer"
    EMAIL_CODE = "email_code"
    PHONE_CODE = "phone_code"
    INVITE = "invite"  # invalid invite codes at registration
    LOOKUP = "lookup"  # unauthenticated requests naming an account that does not exist
    TO_DEVICE = "to_device"  # to-device messages sent, per user per minute
    KEY_CLAIM = "key_claim"  # one-time keys claimed, per user per minute


# What the refusal sentence calls each kind.
_WORDS = {
    Kind.LOGIN: "failed logins",
    Kind.LOGIN_CHALLENGE: "login challenges",
    Kind.TOTP: "wrong two-factor codes",
    Kind.RECOVERY_CODE: "wrong recovery codes",
    Kind.SECURITY_ANSWER: "wrong answers to security questions",
    Kind.EMAIL_CODE: "wrong email codes",
    Kind.PHONE_CODE: "wrong phone codes",
    Kind.INVITE: "invalid invite codes",
    Kind.LOOKUP: "requests naming accounts that do not exist",
    Kind.TO_DEVICE: "to-device messages",
    Kind.KEY_CLAIM: "one-time key claims",
}


@dataclass(frozen=True, slots=True)
class Policy:
    """How many attempts of a kind are allowed per account and per address in a window (0: no limit),
    and how long a lockout lasts (0: a quota, refused until its window ends)."""

    per_account: int
    per_address: int
    window_ms: int
    lockout_ms: int


@dataclass(frozen=True, slots=True)
class Strike:
    """What one failure did: tries left before a lockout (None: unlimited), and the lockout if it began."""

    remaining: int | None
    retry_after_ms: int | None


ACCOUNT, ADDRESS = "account", "address"


def address_subject(address: str) -> str | None:
    """The counter's name for a client address: its IP (an IPv6 address by its /64), hashed; None if unknown."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        text = address
    else:
        if isinstance(ip, ipaddress.IPv6Address):
            text = str(ip.ipv4_mapped or ipaddress.ip_network(f"{ip}/64", strict=False))
        else:
            text = str(ip)
    return "addr:" + hashlib.sha256(f"tokenim-limits:{text}".encode()).hexdigest()


def describe_wait(ms: int) -> str:
    """`14 minutes`, `40 seconds`, `2 hours`: a wait in words, rounded up."""
    seconds = max(1, -(-ms // 1000))
    if seconds < 60:
        return f"{seconds} second{'s' * (seconds != 1)}"
    minutes = -(-seconds // 60)
    if minutes < 120:
        return f"{minutes} minute{'s' * (minutes != 1)}"
    return f"{-(-minutes // 60)} hours"


def rate_limited(message: str, retry_after_ms: int, **details: object) -> TokenIMError:
    """A 429 `rate_limited` carrying `details.retry_after_ms` (the server adds a `Retry-After` header from it)."""
    return TokenIMError(ErrorCode.RATE_LIMITED, message, details={"retry_after_ms": max(1, retry_after_ms), **details})


class Limiter:
    """Counts attempts per account and per address in the database, and refuses over the limits."""

    def __init__(self, db: Database, clock: Clock, policies: Mapping[Kind, Policy], store: Counters | None = None) -> None:
        self._db = db
        self._clock = clock
        self._policies = dict(policies)
        self._store = store or CounterStore()
        self._next_purge = 0

    def policy(self, kind: Kind) -> Policy:
        """The policy in force for `kind`."""
        return self._policies[kind]

    def _subjects(self, kind: Kind, user_id: str | None, address: str) -> list[tuple[str, str, int]]:
        """(scope, subject, limit) for each counter this attempt touches, accounts first (a fixed lock order)."""
        policy = self._policies[kind]
        out = []
        if policy.per_account and user_id:
            out.append((ACCOUNT, user_id, policy.per_account))
        where = address_subject(address)
        if policy.per_address and where is not None:
            out.append((ADDRESS, where, policy.per_address))
        return out

    def _refusal(self, kind: Kind, scope: str, user_id: str | None, retry_after_ms: int) -> TokenIMError:
        policy, what, wait = self._policies[kind], _WORDS[kind], describe_wait(retry_after_ms)
        if policy.lockout_ms == 0 and scope == ACCOUNT:
            limit = policy.per_account
            message = f"You may make at most {limit:,} {what} a minute: try again in {wait}."
        elif policy.lockout_ms == 0:
            message = f"Too many {what} from your address: try again in {wait}."
        elif scope == ACCOUNT:
            message = f"Too many {what} for {user_id}: try again in {wait}."
        else:
            message = f"Too many {what} from your address: try again in {wait}."
        return rate_limited(message, retry_after_ms, kind=kind.value, scope=scope)

    def _blocked_until(self, kind: Kind, counter: Counter | None, limit: int, now: int) -> int:
        if counter is None or counter.expires_at <= now:
            return 0
        if counter.blocked_until > now:
            return counter.blocked_until
        policy = self._policies[kind]
        if policy.lockout_ms == 0 and counter.attempts >= limit:
            return counter.window_start + policy.window_ms
        return 0

    async def check(self, tx: Tx, kind: Kind, *, user_id: str | None = None, address: str = "") -> None:
        """Refuse (429 `rate_limited`) while the account or the address is locked out for `kind`."""
        now = self._clock.now_ms()
        for scope, subject, limit in self._subjects(kind, user_id, address):
            until = self._blocked_until(kind, await self._store.get(tx, kind.value, subject), limit, now)
            if until > now:
                raise self._refusal(kind, scope, user_id, until - now)

    async def failed(self, tx: Tx, kind: Kind, *, user_id: str | None = None, address: str = "") -> Strike:
        """Count one failure against the account and the address; the limit reached starts a lockout.

        The caller's transaction must commit for it to count: raise the refusal after the block."""
        now = self._clock.now_ms()
        policy = self._policies[kind]
        await self._maybe_purge(tx, now)
        remaining: int | None = None
        locked: int | None = None
        for _scope, subject, limit in self._subjects(kind, user_id, address):
            old = await self._store.lock(tx, kind.value, subject, now)
            fresh = old.expires_at <= now
            attempts = 1 if fresh else old.attempts + 1
            start = now if fresh else old.window_start
            blocked = 0 if fresh else old.blocked_until
            if attempts >= limit:
                blocked = max(blocked, now + (policy.lockout_ms or start + policy.window_ms - now))
                locked = max(locked or 0, blocked - now)
            expires = max(start + policy.window_ms, blocked)
            await self._store.put(tx, kind.value, subject, Counter(attempts, start, blocked, expires))
            left = max(0, limit - attempts)
            remaining = left if remaining is None else min(remaining, left)
        return Strike(remaining, locked)

    async def record_failure(self, kind: Kind, *, user_id: str | None = None, address: str = "") -> Strike:
        """`failed` in a transaction of its own, for a refusal already raised out of the caller's
        transaction. Never call it while a write transaction is open."""
        async with self._db.write() as tx:
            return await self.failed(tx, kind, user_id=user_id, address=address)

    async def succeeded(self, tx: Tx, kind: Kind, *, user_id: str) -> None:
        """Forget the account's failures of `kind` (the address's stay)."""
        if self._policies[kind].per_account:
            await self._store.forget(tx, kind.value, user_id)

    async def hit(self, tx: Tx, kind: Kind, *, user_id: str | None = None, address: str = "", amount: int = 1) -> None:
        """Count `amount` against a quota, or refuse (429) when that would pass it; a refusal counts nothing
        (it raises inside the caller's transaction, which rolls back)."""
        now = self._clock.now_ms()
        policy = self._policies[kind]
        await self._maybe_purge(tx, now)
        for scope, subject, limit in self._subjects(kind, user_id, address):
            old = await self._store.lock(tx, kind.value, subject, now)
            fresh = old.expires_at <= now
            used, start = (0, now) if fresh else (old.attempts, old.window_start)
            until = 0 if fresh else old.blocked_until
            if until > now:
                raise self._refusal(kind, scope, user_id, until - now)
            if used + amount > limit:
                raise self._refusal(kind, scope, user_id, start + policy.window_ms - now)
            expires = max(start + policy.window_ms, until)
            await self._store.put(tx, kind.value, subject, Counter(used + amount, start, until, expires))

    async def _maybe_purge(self, tx: Tx, now: int) -> None:
        """Drop expired counters, at most once a minute per process (any node's purge serves them all)."""
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_MS
            await self._store.purge(tx, now)
