"""Text messages (server/sms.py) through the outbox: the `http` provider's request, exactly, against a local
HTTP server (template filled in one pass with JSON-escaped values, bearer token from a file, retried on a
refusal); the `log` provider's marked line; no provider, a clear error; a provider badly set, no start."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.mail_kit import SmsGateway
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.server.api.routes import Services
from tokenim.server.app import build_services
from tokenim.server.config import Config, ServerConfig, SmsConfig, SmsProvider
from tokenim.server.outbox import Outbox, retry_delay_ms
from tokenim.server.sms import build_sms_sender
from tokenim.server.storage.database import Database

SERVER = ServerConfig(server_name="tokenim.test")
# A text that would break a naive template: quotes, a backslash, a newline, and a placeholder of its own.
TEXT = 'Your "TokenIM" code is 493817 \\ {to}\nDo not share it.'


def services_for(database: Database, clock: FakeClock, sms: SmsConfig) -> Services:
    return build_services(Config(server=SERVER, sms=sms), database, clock)


async def send_text(services: Services, database: Database, clock: FakeClock, to: str = "+41 79 555 01 02") -> None:
    async with database.write() as tx:
        await services.outbox.enqueue_sms(tx, to, TEXT, kind="test.phone_code", user_id="@alice:tokenim.test")
    services.scheduler.wake(Outbox.JOB)
    await services.scheduler.run_due(clock.now_ms())


async def test_the_http_provider_posts_the_template_filled_in_with_json_escaped_values_and_the_token(
    database: Database, clock: FakeClock, sms_gateway: SmsGateway, tmp_path: Path
) -> None:
    (tmp_path / "sms-token").write_text("tok-123\n")
    sms = SmsConfig(
        sms_provider=SmsProvider.HTTP,
        sms_url=sms_gateway.url,
        sms_body_template='{"messages": [{"to": "{to}", "body": "{text}", "from": "TokenIM"}]}',
        sms_token_file=tmp_path / "sms-token",
    )
    services = services_for(database, clock, sms)
    await send_text(services, database, clock)
    (request,) = sms_gateway.requests
    assert (request.method, request.path) == ("POST", "/send")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert json.loads(request.body) == {"messages": [{"to": "+41 79 555 01 02", "body": TEXT, "from": "TokenIM"}]}
    assert await services.outbox.pending() == []


async def test_a_refused_text_is_retried_and_without_a_token_no_authorization_is_sent(
    database: Database, clock: FakeClock, sms_gateway: SmsGateway, caplog: pytest.LogCaptureFixture
) -> None:
    services = services_for(database, clock, SmsConfig(sms_provider=SmsProvider.HTTP, sms_url=sms_gateway.url))
    sms_gateway.status = 503
    with caplog.at_level(logging.INFO, logger="tokenim"):
        await send_text(services, database, clock)
    (row,) = await services.outbox.pending()
    assert (row.attempts, row.last_error) == (1, "SMS gateway HTTP 503")
    sms_gateway.status = 200
    clock.advance(ms=retry_delay_ms(1))
    await services.scheduler.run_due(clock.now_ms())
    assert await services.outbox.pending() == [] and len(sms_gateway.requests) == 2
    assert "authorization" not in sms_gateway.requests[-1].headers
    assert json.loads(sms_gateway.requests[-1].body) == {"to": "+41 79 555 01 02", "text": TEXT}  # the default template
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tokenim"))
    assert "493817" not in ours and "555" not in ours


async def test_the_log_provider_writes_the_text_marked_as_not_sent_and_escaped(
    database: Database, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    services = services_for(database, clock, SmsConfig(sms_provider=SmsProvider.LOG))
    with caplog.at_level(logging.WARNING, logger="tokenim.sms"):
        await send_text(services, database, clock, to="+41\x1b[2J79")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tokenim.sms" and "493817" in r.getMessage()]
    assert line.startswith("SMS NOT SENT (sms_provider = log, for development only) to +41\\u001b[2J79: ")
    assert "\n" not in line and "\x1b" not in line
    assert await services.outbox.pending() == []


async def test_without_a_provider_texts_are_refused_with_a_clear_error(database: Database, clock: FakeClock) -> None:
    services = services_for(database, clock, SmsConfig())
    with pytest.raises(TokenIMError) as info:
        services.outbox.require_sms()
    assert info.value.code is ErrorCode.SMS_UNAVAILABLE and "cannot send text messages" in info.value.message
    with pytest.raises(TokenIMError):
        await send_text(services, database, clock)


@pytest.mark.parametrize(
    ("sms", "says"),
    [
        (SmsConfig(sms_provider=SmsProvider.HTTP), "sms_url"),
        (SmsConfig(sms_provider=SmsProvider.HTTP, sms_url="ftp://gateway.example.com/"), "sms_url"),
        (
            SmsConfig(sms_provider=SmsProvider.HTTP, sms_url="https://gw.example.com/", sms_body_template='{"to": "{to}"}'),
            "{text}",
        ),
        (
            SmsConfig(sms_provider=SmsProvider.HTTP, sms_url="https://gw.example.com/", sms_token_file=Path("/nonexistent/t")),
            "sms_token_file",
        ),
    ],
)
def test_a_badly_set_provider_stops_the_server_at_start(sms: SmsConfig, says: str) -> None:
    with pytest.raises(TokenIMError) as info:
        build_sms_sender(sms)
    assert info.value.code is ErrorCode.BAD_CONFIG and says in info.value.message
