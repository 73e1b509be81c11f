"""Two-factor authentication on the server (docs/protocol.md, "Two-factor authentication"), codes computed
independently of pyotp (tests/two_factor_kit.py): setting it up, wrong and replayed codes, one step of skew,
the lock after five wrong codes, recovery codes used once, and the secret never in the database in clear.
Both databases."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.support import add_device, client_auth
from tests.two_factor_kit import code, turn_on
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.two_factor import OTP_HEADER
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import audit_log, two_factor, two_factor_recovery_codes
from tokenim.server.storage.two_factor import TwoFactorStore


async def audit(database: Database, user_id: str) -> list[tuple[str, dict[str, object]]]:
    async with database.read() as tx:
        rows = await tx.execute(
            select(audit_log.c.event, audit_log.c.details_json).where(audit_log.c.user_id == user_id).order_by(audit_log.c.id)
        )
        return [(r.event, json.loads(r.details_json)) for r in rows]


async def invite(http: httpx.AsyncClient, client: Client, otp: str | None = None) -> httpx.Response:
    headers = client_auth(client) | ({OTP_HEADER: otp} if otp is not None else {})
    return await http.post("/v1/admin/invites", json={"expires_in_seconds": 3600}, headers=headers)


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


async def test_turning_it_on_takes_a_code_from_the_new_secret(alice: Client, clock: FakeClock, database: Database) -> None:
    status = await alice.two_factor.status()
    assert (status.enabled, status.pending) == (False, False)
    setup = await alice.two_factor.enable()
    assert setup.uri.startswith("otpauth://totp/") and f"secret={setup.secret}" in setup.uri
    assert (await alice.two_factor.status()).pending
    with pytest.raises(TokenIMError) as exc:
        await alice.two_factor.confirm(code(setup.secret, clock, steps=5))
    assert exc.value.code is ErrorCode.OTP_INVALID and "still off" in exc.value.message
    assert not (await alice.two_factor.status()).enabled
    recovery = await alice.two_factor.confirm(code(setup.secret, clock))
    assert len(recovery) == len(set(recovery)) == 10 and all(len(c) == 19 and c.count("-") == 3 for c in recovery)
    status = await alice.two_factor.status()
    assert (status.enabled, status.pending, status.recovery_codes_left, status.enabled_at) == (True, False, 10, clock.now_ms())
    with pytest.raises(TokenIMError) as exc:
        await alice.two_factor.enable()
    assert exc.value.code is ErrorCode.TWO_FACTOR_ON
    assert ("2fa.enabled", {}) in await audit(database, alice.user_id)


async def test_a_setup_not_confirmed_guards_nothing(http: httpx.AsyncClient, alice: Client) -> None:
    await alice.two_factor.enable()
    assert (await invite(http, alice)).status_code == 200


async def test_a_guarded_request_needs_a_current_code_and_a_wrong_one_is_audited(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock, database: Database
) -> None:
    secret, _ = await turn_on(alice, clock)
    resp = await invite(http, alice)
    assert (resp.status_code, error_code(resp)) == (401, "otp_required")
    wrong = str((int(code(secret, clock)) + 1) % 1_000_000).zfill(6)
    resp = await invite(http, alice, wrong)
    assert (resp.status_code, error_code(resp)) == (401, "otp_invalid") and "wrong" in resp.json()["error"]["message"]
    resp = await invite(http, alice, "12345")
    assert (resp.status_code, error_code(resp)) == (400, "invalid_request")  # not a code at all: not counted
    assert (await invite(http, alice, code(secret, clock))).status_code == 200
    events = await audit(database, alice.user_id)
    assert ("2fa.failed", {"reason": "wrong_code"}) in events
    assert [e for e, _ in events].count("2fa.failed") == 1 and [e for e, _ in events].count("invite.created") == 1


async def test_a_code_is_accepted_once(http: httpx.AsyncClient, alice: Client, clock: FakeClock, database: Database) -> None:
    secret, _ = await turn_on(alice, clock)
    now_code = code(secret, clock)
    assert (await invite(http, alice, now_code)).status_code == 200
    replay = await invite(http, alice, now_code)
    assert error_code(replay) == "otp_invalid" and "already used" in replay.json()["error"]["message"]
    # A code of the step before the one spent is refused too, though within the skew.
    clock.advance(seconds=30)
    assert (await invite(http, alice, code(secret, clock, steps=1))).status_code == 200
    assert error_code(await invite(http, alice, code(secret, clock))) == "otp_invalid"
    assert ("2fa.failed", {"reason": "replayed"}) in await audit(database, alice.user_id)


@pytest.mark.parametrize(("steps", "accepted"), [(-1, True), (1, True), (-2, False), (2, False)])
async def test_one_step_of_clock_skew_is_tolerated(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock, steps: int, accepted: bool
) -> None:
    secret, _ = await turn_on(alice, clock)
    clock.advance(seconds=60)  # the step before now was never spent
    resp = await invite(http, alice, code(secret, clock, steps=steps))
    assert (resp.status_code == 200) is accepted, resp.text


async def test_five_wrong_codes_lock_two_factor_checks_for_15_minutes(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock, database: Database
) -> None:
    secret, _ = await turn_on(alice, clock)
    for _ in range(4):  # four wrong codes, then a good one: the count starts again
        assert error_code(await invite(http, alice, "000000" if code(secret, clock) != "000000" else "111111")) == "otp_invalid"
    assert (await invite(http, alice, code(secret, clock))).status_code == 200
    clock.advance(seconds=30)
    bad = "000000" if code(secret, clock) != "000000" else "111111"
    for _ in range(5):
        assert error_code(await invite(http, alice, bad)) == "otp_invalid"
    locked = await invite(http, alice, code(secret, clock))  # even the right code, while locked
    err = locked.json()["error"]
    assert (locked.status_code, err["code"], err["details"]["retry_after_ms"]) == (429, "rate_limited", 15 * 60_000)
    assert (await alice.two_factor.status()).locked_until == clock.now_ms() + 15 * 60_000
    failed = [d for e, d in await audit(database, alice.user_id) if e == "2fa.failed"]
    assert len(failed) == 9 and failed[-1] == {"reason": "wrong_code", "locked_until": clock.now_ms() + 15 * 60_000}
    clock.advance(seconds=15 * 60 - 1)
    assert error_code(await invite(http, alice, code(secret, clock))) == "rate_limited"
    clock.advance(seconds=1)
    assert (await invite(http, alice, code(secret, clock))).status_code == 200


async def test_a_wrong_code_is_counted_though_the_change_it_guarded_rolls_back(
    alice: Client, clock: FakeClock, database: Database
) -> None:
    """The refusal leaves its record both from a job of the event writer (adding a device) and from a plain
    transaction (creating a backup): five wrong codes across them lock, and neither change was made."""
    secret, _ = await turn_on(alice, clock)
    bad = "000000" if code(secret, clock) != "000000" else "111111"
    alice.two_factor.use_codes(bad)
    for attempt in range(5):
        with pytest.raises(TokenIMError) as exc:
            if attempt % 2:
                await alice.backup.create()
            else:
                await add_device(alice, clock)
        assert exc.value.code is ErrorCode.OTP_INVALID
    assert [d.device_id for d in (await alice.devices.all()).devices] == [alice.device_id]
    assert not (await alice.backup.status()).exists
    assert [e for e, _ in await audit(database, alice.user_id)].count("2fa.failed") == 5
    alice.two_factor.use_codes(code(secret, clock))
    with pytest.raises(TokenIMError) as exc:
        await alice.backup.create()
    assert exc.value.code is ErrorCode.RATE_LIMITED


async def test_turning_it_off_needs_a_code_or_a_recovery_code_used_once(
    http: httpx.AsyncClient, alice: Client, clock: FakeClock, database: Database
) -> None:
    secret, recovery = await turn_on(alice, clock)
    with pytest.raises(TokenIMError) as exc:
        await alice.two_factor.disable()
    assert exc.value.code is ErrorCode.OTP_REQUIRED
    with pytest.raises(TokenIMError) as exc:
        await alice.two_factor.disable(recovery_code="AAAA-AAAA-AAAA-AAAA")
    assert exc.value.code is ErrorCode.OTP_INVALID
    await alice.two_factor.disable(recovery_code=recovery[0].lower().replace("-", " "))  # any case, any spacing
    assert not (await alice.two_factor.status()).enabled
    assert (await invite(http, alice)).status_code == 200  # nothing guarded any more
    events = await audit(database, alice.user_id)
    assert ("2fa.recovery_code_used", {"codes_left": 9}) in events and ("2fa.disabled", {"by": "recovery_code"}) in events
    with pytest.raises(TokenIMError) as exc:
        await alice.two_factor.disable()
    assert exc.value.code is ErrorCode.TWO_FACTOR_OFF
    # On again: the old recovery codes are gone; off with a current code this time.
    secret, _ = await turn_on(alice, clock)
    with pytest.raises(TokenIMError) as exc:
        await alice.two_factor.disable(recovery_code=recovery[1])
    assert exc.value.code is ErrorCode.OTP_INVALID
    alice.two_factor.use_codes(code(secret, clock))
    await alice.two_factor.disable()
    assert ("2fa.disabled", {"by": "code"}) in await audit(database, alice.user_id)


async def test_a_recovery_code_works_once_for_the_recovery_flow(alice: Client, clock: FakeClock, app: object) -> None:
    """`use_recovery_code(tx, user_id, code)`, the service method the lost-key recovery calls."""
    _secret, recovery = await turn_on(alice, clock)
    service = app.state.services.two_factor  # type: ignore[attr-defined]
    db = app.state.services.accounts._ctx.db  # type: ignore[attr-defined]
    async with db.write() as tx:
        assert await service.use_recovery_code(tx, alice.user_id, recovery[3])
        assert not await service.use_recovery_code(tx, alice.user_id, recovery[3])
        assert not await service.use_recovery_code(tx, alice.user_id, "ZZZZ-ZZZZ-ZZZZ-ZZZZ")
        assert not await service.use_recovery_code(tx, "@bob:tokenim.test", recovery[4])
    assert (await alice.two_factor.status()).recovery_codes_left == 9


async def test_the_secret_and_the_recovery_codes_are_not_in_the_database_in_clear(
    alice: Client, clock: FakeClock, database: Database, tmp_path: Path
) -> None:
    secret, recovery = await turn_on(alice, clock)
    forms = [
        secret.encode(),
        base64.b32decode(secret),
        *(c.encode() for c in recovery),
        *(c.replace("-", "").encode() for c in recovery),
    ]
    if database.is_sqlite:
        await database.close()  # everything written back into the file
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("server.db"))
        assert b"2fa.enabled" in raw  # the scan reads what was written
    else:
        async with database.read() as tx:
            rows = [*await tx.execute(select(two_factor)), *await tx.execute(select(two_factor_recovery_codes))]
        raw = b"".join(repr(tuple(r)).encode() + b"".join(v for v in r if isinstance(v, bytes)) for r in rows)
        assert alice.user_id.encode() in raw
    for form in forms:
        assert form not in raw


async def test_the_secret_is_sealed_for_its_user(alice: Client, bob: Client, clock: FakeClock, database: Database) -> None:
    """Copying one user's sealed secret into another's row does not give the other that secret."""
    secret, _ = await turn_on(alice, clock)
    await turn_on(bob, clock)
    async with database.write() as tx:
        sealed = (await tx.execute(select(two_factor.c.secret_sealed).where(two_factor.c.user_id == alice.user_id))).scalar()
        await tx.execute(two_factor.update().where(two_factor.c.user_id == bob.user_id).values(secret_sealed=sealed))
    bob.two_factor.use_codes(code(secret, clock))
    with pytest.raises(TokenIMError) as exc:
        await bob.backup.create()
    assert exc.value.code is ErrorCode.INTERNAL and "cannot read a secret" in exc.value.message


async def test_the_store_spends_each_step_once(alice: Client, clock: FakeClock, database: Database) -> None:
    """The SQL guard under the service's check: two requests racing with one code, only one spends it."""
    await turn_on(alice, clock)
    store = TwoFactorStore()
    async with database.write() as tx:
        row = await store.get(tx, alice.user_id)
        assert row is not None and row.last_step > 0
        assert not await store.spend_step(tx, alice.user_id, row.last_step)
        assert await store.spend_step(tx, alice.user_id, row.last_step + 1)
        assert not await store.spend_step(tx, alice.user_id, row.last_step + 1)
