"""Security notices (server/services/notices.py): a new device mails its owner, through the real SMTP server, once
the device is committed; a refused or rolled-back addition mails nobody; the mails are plain, name no secret
and show what they quote escaped."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.identity_kit import Account, Device, register
from tests.mail_kit import Mailbox
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import new_device_id
from tokenim.protocol.key_lifecycle import add_device_payload
from tokenim.server.api.routes import Services
from tokenim.server.config import Config, EmailConfig, ServerConfig
from tokenim.server.outbox import Outbox
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.services.notices import NoticeKind

ALICE = "alice@example.com"


@pytest.fixture
def config(email_config: EmailConfig) -> Config:
    return Config(server=ServerConfig(registration=RegistrationMode.OPEN, server_name="tokenim.test"), email=email_config)


@pytest.fixture
def services(app: FastAPI) -> Services:
    return app.state.services  # type: ignore[no-any-return]


async def deliver(services: Services, clock: FakeClock) -> None:
    services.scheduler.wake(Outbox.JOB)
    await services.scheduler.run_due(clock.now_ms())


async def add_by_master_key(http: httpx.AsyncClient, acc: Account) -> tuple[Device, httpx.Response]:
    device = Device(acc.user_id, new_device_id())
    challenge = await http.post(
        "/v1/devices/by_master_key/challenge", json={"user_id": acc.user_id, "device_id": device.device_id}
    )
    c = challenge.json()
    payload = add_device_payload(
        server_name=c["server_name"],
        user_id=acc.user_id,
        device_id=device.device_id,
        device_ed25519=device.ed25519,
        nonce=c["nonce"],
    )
    body: dict[str, Any] = {
        "user_id": acc.user_id,
        "nonce": c["nonce"],
        "signature": acc.master.sign(payload),
        "device_keys": device.keys_object(acc.master, acc.version),
        "one_time_keys": device.one_time_keys(2),
    }
    return device, await http.post("/v1/devices/by_master_key/add", json=body)


async def test_a_device_added_by_another_device_mails_its_owner_after_commit(
    http: httpx.AsyncClient, services: Services, clock: FakeClock, mailbox: Mailbox
) -> None:
    alice = await register(http, "alice", email=ALICE)
    await register(http, "bob", email="bob@example.com")
    await deliver(services, clock)
    assert mailbox.delivered == []  # registering is not news to anyone
    device, resp = await alice.add_device()
    assert resp.status_code == 200, resp.text
    assert mailbox.delivered == []  # queued with the device, sent by the scheduler: the request never waits on SMTP
    await deliver(services, clock)
    (mail,) = mailbox.delivered
    assert mail.rcpt_tos == [ALICE] and mail.message["Subject"] == "New device on your TokenIM account"
    assert mail.body.startswith(
        f"A new device {device.device_id} was added to your account @alice:tokenim.test on tokenim.test "
        f"by your device {alice.first}.\nWhen: "
    )
    assert "tokenim devices revoke" in mail.body and "access_token" not in mail.body


async def test_a_device_added_with_the_master_key_mails_its_owner(
    http: httpx.AsyncClient, services: Services, clock: FakeClock, mailbox: Mailbox
) -> None:
    alice = await register(http, "alice", email=ALICE)
    device, resp = await add_by_master_key(http, alice)
    assert resp.status_code == 200, resp.text
    await deliver(services, clock)
    (mail,) = mailbox.to(ALICE)
    assert (
        f"A new device {device.device_id} was added to your account @alice:tokenim.test on tokenim.test with your master key."
        in (mail.body)
    )
    assert resp.json()["access_token"] not in mail.body and resp.json()["refresh_token"] not in mail.body


@pytest.mark.parametrize("failure", [TokenIMError(ErrorCode.FORBIDDEN, "refused late"), RuntimeError("crashed late")])
async def test_an_addition_that_fails_after_the_notice_was_queued_mails_nobody(
    http: httpx.AsyncClient,
    services: Services,
    clock: FakeClock,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    """The notice is queued in the device's own transaction (the writer's savepoint, or its whole batch): a
    failure after it undoes both."""
    alice = await register(http, "alice", email=ALICE)
    notify = services.notices.notify

    async def notify_then_fail(*args: Any, **kwargs: Any) -> bool:
        assert await notify(*args, **kwargs)
        raise failure

    monkeypatch.setattr(services.notices, "notify", notify_then_fail)
    if isinstance(failure, TokenIMError):  # a refusal: the writer rolls back to the job's savepoint, and answers
        _, resp = await alice.add_device()
        assert resp.status_code == 403
    else:  # a crash: the batch rolls back (the in-process app raises it to the test)
        with pytest.raises(RuntimeError, match="crashed late"):
            await alice.add_device()
    monkeypatch.undo()
    await deliver(services, clock)
    assert mailbox.delivered == [] and await services.outbox.pending() == []
    assert len((await http.get("/v1/devices", headers=alice.auth())).json()["devices"]) == 1
    _, resp = await alice.add_device()  # the control: the same path, not failing, mails
    await deliver(services, clock)
    assert resp.status_code == 200 and len(mailbox.to(ALICE)) == 1


async def test_a_user_without_an_address_is_not_mailed_and_the_device_is_added(
    http: httpx.AsyncClient, services: Services, clock: FakeClock, mailbox: Mailbox
) -> None:
    carol = await register(http, "carol")
    _, resp = await carol.add_device()
    assert resp.status_code == 200
    assert await services.outbox.pending() == []
    await deliver(services, clock)
    assert mailbox.delivered == []


async def test_every_notice_is_plain_says_when_and_what_to_do_and_shows_what_it_quotes_escaped(services: Services) -> None:
    hostile = {"device_id": "EVIL\x1b[2J\u202eKCART", "by_device": "X\r\nBcc: eve@example.com", "until": "soon\x07"}
    for kind in NoticeKind:
        body = services.notices.body("@alice:tokenim.test", kind, hostile, 1_800_000_000_000)
        assert "When: 2027-01-15 08:00 UTC." in body and "If it was not you" in body
        assert body.isascii() and all(ch.isprintable() or ch == "\n" for ch in body)
        assert "\nBcc:" not in body
    new_device = services.notices.body("@alice:tokenim.test", NoticeKind.NEW_DEVICE, hostile, 0)
    assert "EVIL\\u001b[2J\\u202eKCART" in new_device and "X\\u000d\\u000aBcc: eve@example.com" in new_device
