"""Two-factor authentication from the command line, on a real server: enable (QR code and URI), confirm (the
recovery codes), a guarded command refused without a code, done with --otp and with TOKENIM_OTP, then disable.
Codes are computed here from the secret, independently of pyotp (tests/two_factor_kit.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENIM, Cli, RunningServer, start_server, stop_server
from tests.two_factor_kit import STEP_SECONDS, hotp, secret_key

pytestmark = pytest.mark.e2e


def run(cli: Cli, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tokenim` with no terminal on stdin (so nothing can be asked at a prompt)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
    return subprocess.run(
        [*TOKENIM, "--profile", str(cli.profile), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=base | {"TOKENIM_PASSPHRASE": cli.passphrase} | (env or {}),
        timeout=60,
    )


class Codes:
    """Codes for the real clock, each of a later time step than the one before (a code is accepted once), taken
    from the current step or the next (one step of skew is tolerated) and waiting for the clock when needed."""

    def __init__(self, secret: str) -> None:
        self._key = secret_key(secret)
        self._last = 0

    def next(self) -> str:
        step = max(self._last + 1, int(time.time()) // STEP_SECONDS)
        deadline = time.monotonic() + 2 * STEP_SECONDS
        while int(time.time()) // STEP_SECONDS < step - 1:  # the server accepts step - 1 .. step + 1 around its own
            assert time.monotonic() < deadline, "the clock did not move on"
            time.sleep(0.2)
        self._last = step
        return hotp(self._key, step)


@pytest.fixture
def open_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


def test_two_factor_from_enable_to_disable(open_server: RunningServer, tmp_path: Path) -> None:
    alice = Cli(tmp_path / "alice")
    alice.json("register", "--server", open_server.url, "--username", "alice")  # the first account: admin

    shown = run(alice, "2fa", "enable")
    assert shown.returncode == 0, shown.stderr
    assert "Scan this QR code" in shown.stdout and "otpauth://totp/" in shown.stdout
    assert any(ch in shown.stdout for ch in "█▀▄")  # the QR code, drawn in block characters
    assert "tokenim 2fa confirm CODE" in shown.stdout
    setup = alice.json("2fa", "enable")  # a new setup replaces the one not confirmed
    secret = str(setup["secret"])
    assert str(setup["uri"]).startswith("otpauth://totp/") and f"secret={secret}" in str(setup["uri"])
    key_file = open_server.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    codes = Codes(secret)
    confirmed = run(alice, "2fa", "confirm", codes.next())
    assert confirmed.returncode == 0, confirmed.stderr
    recovery = [line.strip() for line in confirmed.stdout.splitlines() if line.startswith("    ")]
    assert len(recovery) == 10 and all(len(c) == 19 for c in recovery)
    stored = b"".join(p.read_bytes() for p in open_server.data_dir.iterdir() if p.name.startswith("tokenim.db"))
    assert b"2fa.enabled" in stored and secret.encode() not in stored and recovery[0].encode() not in stored

    refused = run(alice, "admin", "invite", "create")
    assert refused.returncode == 1 and "--otp CODE or set TOKENIM_OTP" in refused.stderr, refused.stderr
    refused = run(alice, "admin", "invite", "create", "--json")
    assert json.loads(refused.stdout)["error"]["code"] == "otp_required"

    made = run(alice, "admin", "invite", "create", "--otp", codes.next())
    assert made.returncode == 0 and "Invite code:" in made.stdout, made.stderr

    off = run(alice, "2fa", "disable", env={"TOKENIM_OTP": codes.next()})
    assert off.returncode == 0 and "off" in off.stdout, off.stderr
    assert alice.json("2fa", "status")["enabled"] is False
