"""Outgoing mail through aiosmtplib, as the `[email]` section says (docs/admin.md, "Mail").

Services never send mail themselves: they enqueue it in their transaction (`Outbox.enqueue_mail`, in
server/outbox.py, which says how) and the scheduler hands it to `SmtpMailer.send` after commit. With no
`smtp_host` there is no mailer: `build_mailer` returns None, and `Outbox.require_email()` refuses with
`email_unavailable`.

TLS: `smtp_tls` speaks TLS from the first byte (port 465); `smtp_starttls` upgrades and refuses to go on
in clear if the server does not offer STARTTLS; neither sends in clear (for a relay on the same host).
The server's certificate is checked against the system's CAs, or `smtp_ca_file`. The password is read
from its file once, at start, and is never logged; failures are logged by their kind and SMTP status only.
"""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

import aiosmtplib

from tokenim.server.config import EmailConfig, SmtpSecurity
from tokenim.server.outbox import DeliveryFailed, OutgoingMail


def _host(server_name: str) -> str:
    return server_name.rsplit(":", 1)[0] if server_name.count(":") == 1 else server_name


class SmtpMailer:
    """One SMTP conversation per mail (the server sends few): connect, TLS as configured, log in, send."""

    def __init__(self, config: EmailConfig, server_name: str) -> None:
        self._config = config
        self._password = config.password() if config.smtp_user else ""  # a bad file stops the server at start
        self._hostname = _host(server_name)
        self.sender = config.smtp_from or f"tokenim@{self._hostname}"

    def compose(self, mail: OutgoingMail, now_ms: int) -> EmailMessage:
        """The message as it goes out: plain text, marked as automatic, dated by the server's clock."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = mail.to
        msg["Subject"] = mail.subject
        msg["Date"] = email.utils.formatdate(now_ms / 1000, usegmt=True)
        msg["Message-ID"] = email.utils.make_msgid(domain=self._hostname)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        msg.set_content(mail.body)
        return msg

    async def send(self, mail: OutgoingMail, now_ms: int) -> None:
        """Hand the mail to the SMTP server; any failure is `DeliveryFailed` naming its kind and SMTP status."""
        cfg = self._config
        try:
            await aiosmtplib.send(
                self.compose(mail, now_ms),
                hostname=cfg.smtp_host,
                port=cfg.smtp_port,
                username=cfg.smtp_user or None,
                password=self._password if cfg.smtp_user else None,
                use_tls=cfg.security is SmtpSecurity.TLS,
                start_tls=cfg.security is SmtpSecurity.STARTTLS,  # False, not None: no silent opportunistic TLS
                cert_bundle=str(cfg.smtp_ca_file) if cfg.smtp_ca_file else None,
                timeout=cfg.smtp_timeout_seconds,
                local_hostname=self._hostname,
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"SMTP {type(exc).__name__} {exc.code}") from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            raise DeliveryFailed(f"SMTP recipient refused {codes}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"SMTP {type(exc).__name__}") from None


def build_mailer(config: EmailConfig, server_name: str) -> SmtpMailer | None:
    """The mailer the `[email]` section describes, or None when it names no `smtp_host` (mail off)."""
    return SmtpMailer(config, server_name) if config.enabled else None
