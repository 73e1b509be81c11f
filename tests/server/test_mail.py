"""Outgoing mail (server/mail.py, server/outbox.py) against a real SMTP server on 127.0.0.1: queued in the
caller's transaction (a rollback sends nothing), sealed at rest, delivered by the scheduler after commit with
the right headers, retried with backoff while the SMTP server is down or refusing, given up after a day,
STARTTLS with a checked certificate and a login, and never a word of a mail in the logs."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.mail_kit import Mailbox, SmtpServer, free_port, self_signed_tls
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.api.routes import Services
from tokenim.server.app import build_services
from tokenim.server.config import Config, EmailConfig, ServerConfig
from tokenim.server.outbox import GIVE_UP_MS, Outbox, retry_delay_ms
from tokenim.server.storage.audit import AuditStore
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import outbox as outbox_table

SERVER = ServerConfig(server_name="tokenim.test")
CODE = "493817"


def services_for(database: Database, clock: FakeClock, email: EmailConfig) -> Services:
    return build_services(Config(server=SERVER, email=email), database, clock)


async def queue(services: Services, database: Database, to: str = "alice@example.com", code: str = CODE) -> None:
    async with database.write() as tx:
        await services.outbox.enqueue_mail(
            tx, to, "Your TokenIM code", f"Your code is {code}.\n", kind="test.code", user_id="@alice:tokenim.test"
        )


async def deliver(services: Services, clock: FakeClock) -> None:
    """What the scheduler does once a second in `tokenim serve`, now."""
    services.scheduler.wake(Outbox.JOB)
    await services.scheduler.run_due(clock.now_ms())


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What TokenIM itself logged (the test SMTP server logs addresses of its own)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tokenim"))


async def test_mail_queued_in_a_rolled_back_transaction_is_never_sent(
    database: Database, clock: FakeClock, email_config: EmailConfig, mailbox: Mailbox
) -> None:
    services = services_for(database, clock, email_config)
    with pytest.raises(RuntimeError):
        async with database.write() as tx:
            await services.outbox.enqueue_mail(tx, "alice@example.com", "Rolled back", "never", kind="test.code")
            raise RuntimeError("the change failed after the mail was queued")
    await queue(services, database, to="bob@example.com")  # the control: a committed one goes
    await deliver(services, clock)
    clock.advance(days=2)
    await deliver(services, clock)
    assert [d.rcpt_tos for d in mailbox.delivered] == [["bob@example.com"]]


async def test_a_delivered_mail_has_its_headers_and_leaves_nothing_behind(
    database: Database, clock: FakeClock, email_config: EmailConfig, mailbox: Mailbox, tmp_path: Path
) -> None:
    services = services_for(database, clock, email_config)
    await queue(services, database)
    # Queued, not sent: the request that queued it never waits on SMTP. At rest, nothing of it is readable.
    assert mailbox.delivered == []
    async with database.read() as tx:
        (sealed,) = (await tx.execute(select(outbox_table.c.sealed))).one()
    assert CODE.encode() not in sealed and b"alice@example.com" not in sealed and b"Your TokenIM" not in sealed
    if database.is_sqlite:
        assert CODE.encode() not in (tmp_path / "server.db").read_bytes()

    await deliver(services, clock)
    (mail,) = mailbox.to("alice@example.com")
    assert mail.message["From"] == "TokenIM <tokenim@tokenim.test>" and mail.mail_from == "tokenim@tokenim.test"
    assert mail.message["To"] == "alice@example.com" and mail.message["Subject"] == "Your TokenIM code"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert mail.message["Date"].datetime.timestamp() == clock.now_ms() // 1000  # the server's clock, not the machine's
    assert mail.message["Message-ID"].endswith("@tokenim.test>")
    assert mailbox.latest_code("alice@example.com") == CODE and not mail.tls
    assert await services.outbox.pending() == []  # sent: the row and its sealed content are gone


async def test_while_the_smtp_server_is_down_mail_waits_with_backoff_then_goes(
    database: Database, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    services = services_for(database, clock, EmailConfig(smtp_host="127.0.0.1", smtp_port=port, smtp_timeout_seconds=5))
    await queue(services, database)
    start = clock.now_ms()
    with caplog.at_level(logging.INFO):
        await deliver(services, clock)
        (row,) = await services.outbox.pending()
        assert (row.attempts, row.next_attempt_at) == (1, start + retry_delay_ms(1))
        assert row.last_error is not None and row.last_error.startswith("SMTP")
        clock.advance(ms=retry_delay_ms(1) - 1)
        await deliver(services, clock)  # not yet due: no attempt
        assert (await services.outbox.pending())[0].attempts == 1
        clock.advance(ms=1)
        await deliver(services, clock)
        (row,) = await services.outbox.pending()
        assert (row.attempts, row.next_attempt_at) == (2, clock.now_ms() + retry_delay_ms(2))
        assert retry_delay_ms(2) == 2 * retry_delay_ms(1)

        server = SmtpServer(port=port)  # the SMTP server comes back
        try:
            clock.advance(ms=retry_delay_ms(2))
            await deliver(services, clock)
            assert server.mailbox.latest_code("alice@example.com") == CODE
        finally:
            server.stop()
    assert await services.outbox.pending() == []
    ours = server_log(caplog)
    assert "failed (SMTP" in ours and "alice@example.com" not in ours and CODE not in ours and "Your TokenIM" not in ours


async def test_mail_still_refused_after_a_day_is_given_up_logged_and_audited(
    database: Database, clock: FakeClock, email_config: EmailConfig, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    services = services_for(database, clock, email_config)
    mailbox.refuse = "451 4.3.0 Try again later"
    await queue(services, database)
    start = clock.now_ms()
    with caplog.at_level(logging.INFO):
        await deliver(services, clock)
        (row,) = await services.outbox.pending()
        assert row.last_error == "SMTP recipient refused [451]"
        while clock.now_ms() - start < GIVE_UP_MS - retry_delay_ms(40):  # tried again and again for a day
            clock.advance(ms=retry_delay_ms(40))
            await deliver(services, clock)
            assert len(await services.outbox.pending()) == 1
        clock.advance(ms=retry_delay_ms(40))
        await deliver(services, clock)
    assert await services.outbox.pending() == [] and mailbox.delivered == []
    ours = server_log(caplog)
    assert "given up" in ours and CODE not in ours and "alice@example.com" not in ours
    async with database.read() as tx:
        (record,) = await AuditStore().for_user(tx, "@alice:tokenim.test")
    assert record.event == "outbox.undelivered" and record.details["kind"] == "test.code"
    assert record.details["reason"] == "SMTP recipient refused [451]" and record.ts - start >= GIVE_UP_MS


async def test_starttls_checks_the_certificate_and_logs_in_and_never_falls_back_to_clear_text(
    database: Database, clock: FakeClock, tmp_path: Path, email_config: EmailConfig, mailbox: Mailbox
) -> None:
    context, cert_file = self_signed_tls(tmp_path)
    (tmp_path / "smtp-password").write_text("s3cret pass\n")
    server = SmtpServer(tls=context, users={"tokenim": "s3cret pass"})
    try:
        secure = EmailConfig(
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_starttls=True,
            smtp_ca_file=cert_file,
            smtp_user="tokenim",
            smtp_password_file=tmp_path / "smtp-password",
        )
        services = services_for(database, clock, secure)
        await queue(services, database)
        await deliver(services, clock)
        (mail,) = server.mailbox.delivered
        assert mail.tls and mail.login == "tokenim" and mail.body == f"Your code is {CODE}.\n"

        # The same server, its certificate not trusted (the system's CAs): nothing is sent.
        untrusting = services_for(database, clock, replace(secure, smtp_ca_file=None))
        await queue(untrusting, database)
        await deliver(untrusting, clock)
        assert len(server.mailbox.delivered) == 1 and (await untrusting.outbox.pending())[0].attempts == 1
    finally:
        server.stop()
    # STARTTLS asked of a server that does not offer it: refused, never sent in clear.
    async with database.write() as tx:
        await tx.execute(outbox_table.delete())
    plain = services_for(database, clock, replace(email_config, smtp_starttls=True))
    await queue(plain, database)
    await deliver(plain, clock)
    assert mailbox.delivered == [] and (await plain.outbox.pending())[0].last_error == "SMTP SMTPException"


async def test_without_an_smtp_host_mail_is_refused_with_a_clear_error(database: Database, clock: FakeClock) -> None:
    services = services_for(database, clock, EmailConfig())
    assert not services.outbox.email_enabled
    with pytest.raises(TokenIMError) as info:
        services.outbox.require_email()
    assert info.value.code is ErrorCode.EMAIL_UNAVAILABLE and info.value.status == 503
    assert "cannot send email" in info.value.message
    with pytest.raises(TokenIMError):
        await queue(services, database)
    assert await services.outbox.pending() == []


async def test_a_recipient_or_subject_cannot_smuggle_in_headers(
    database: Database, clock: FakeClock, email_config: EmailConfig
) -> None:
    services = services_for(database, clock, email_config)
    for to, subject in (("alice@example.com\r\nBcc: eve@example.com", "Hi"), ("alice@example.com", "Hi\nBcc: eve@example.com")):
        async with database.write() as tx:
            with pytest.raises(ValueError):
                await services.outbox.enqueue_mail(tx, to, subject, "body", kind="test.code")
    assert await services.outbox.pending() == []
