"""`tokenim serve` sends mail from its own scheduler loop: a device added over HTTP reaches the owner's
mailbox on a real SMTP server without any test driving the clock, the server key is made owner-only, and
the server's log names the mail but never its address."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_server, stop_server
from tests.identity_kit import register
from tests.mail_kit import Mailbox, SmtpServer

pytestmark = pytest.mark.e2e


async def test_a_running_server_mails_a_new_device_to_its_owner(
    tmp_path: Path, smtp_server: SmtpServer, mailbox: Mailbox
) -> None:
    config = tmp_path / "tokenim.toml"
    config.write_text(f'[email]\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp_server.port}\n')
    data = tmp_path / "data"
    srv = start_server(data, "--config", str(config), "--registration", "open", "--server-name", "tokenim.test")
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
            alice = await register(http, "alice", email="alice@example.com")
            device, resp = await alice.add_device()
            assert resp.status_code == 200, resp.text
        (mail,) = mailbox.wait_for("alice@example.com")
        assert mail.message["From"] == "tokenim@tokenim.test" and device.device_id in mail.body
        assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
        srv.wait_for_output("security.new_device for @alice:tokenim.test) sent")
    finally:
        log = stop_server(srv)
    assert "alice@example.com" not in log and "Traceback" not in log
