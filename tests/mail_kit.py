"""Real outside servers for the operations wing: an SMTP server (aiosmtpd) and an SMS gateway (http.server),
each on 127.0.0.1 at a port of its own, in a thread, collecting what they are sent.

The fixtures in tests/conftest.py start one of each per test session (per xdist worker) and give each test a
cleared view: `mailbox` (with `latest_code(address)` to read a one-time code from the newest mail to an
address) and `sms_gateway`. A test that needs another kind of server (STARTTLS, a server that comes up
late) starts its own `SmtpServer`.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class Delivered:
    """One mail as the SMTP server received it: the envelope, the parsed message, and how the session went."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


@dataclass
class Mailbox:
    """The aiosmtpd handler: keeps every delivered mail; `refuse` set to an SMTP reply refuses recipients."""

    delivered: list[Delivered] = field(default_factory=list)
    refuse: str | None = None
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if self.refuse is not None:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        with self._arrived:
            self.delivered.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), message, session.ssl is not None, login))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def clear(self) -> None:
        with self._arrived:
            self.delivered.clear()
        self.refuse = None

    def to(self, address: str) -> list[Delivered]:
        """The mails delivered to `address`, oldest first."""
        with self._arrived:
            return [d for d in self.delivered if address in d.rcpt_tos]

    def wait_for(self, address: str, count: int = 1, timeout: float = 30) -> list[Delivered]:
        """The mails to `address` once there are at least `count` (a server in another process sends them
        when its scheduler runs); fails after `timeout` seconds."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.to(address)) >= count, timeout):
                raise AssertionError(f"fewer than {count} mails reached {address} within {timeout} s")
            return self.to(address)

    def latest_code(self, address: str, pattern: str = r"\b(\d{6})\b") -> str:
        """The one-time code in the newest mail to `address` (the first group of `pattern` in its body)."""
        mails = self.to(address)
        assert mails, f"no mail was delivered to {address}"
        found = re.search(pattern, mails[-1].body)
        assert found, f"no code in the latest mail to {address}"
        return found.group(1)


class _Controller(Controller):
    """aiosmtpd's threaded controller, on a port the system picks (it needs the number to check it is up)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _authenticate(users: dict[str, str]) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and users.get(auth_data.login.decode()) == auth_data.password.decode()
        return AuthResult(success=ok, auth_data=auth_data.login if ok else None)

    return check


class SmtpServer:
    """A real SMTP server on 127.0.0.1 in its own thread. `port=0`: any free port."""

    def __init__(
        self,
        *,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.mailbox = Mailbox()
        extra: dict[str, Any] = {}
        if tls is not None:
            extra.update(tls_context=tls, require_starttls=True)
        if users is not None:
            extra.update(authenticator=_authenticate(users), auth_required=True, auth_require_tls=tls is not None)
        self._controller = _Controller(self.mailbox, hostname="127.0.0.1", port=port, **extra)
        self._controller.start()
        self.port: int = self._controller.port

    def stop(self) -> None:
        self._controller.stop()


def free_port() -> int:
    """A port nothing listens on just now (for a server that is down, then comes up on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 with a fresh self-signed certificate, and that certificate's file
    (what a client trusts as its CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


@dataclass(frozen=True, slots=True)
class SmsRequest:
    """One request the SMS gateway received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class SmsGateway:
    """A small HTTP server standing in for an SMS provider: records each request, answers `status`."""

    def __init__(self) -> None:
        self.requests: list[SmsRequest] = []
        self.status = 200
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                gateway.requests.append(SmsRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(gateway.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/send"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def clear(self) -> None:
        self.requests.clear()
        self.status = 200

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
