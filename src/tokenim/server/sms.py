"""Text messages (phone verification codes), as the `[sms]` section says (docs/admin.md, "Text messages").

Like mail, a text is enqueued in the caller's transaction (`Outbox.enqueue_sms`, server/outbox.py) and
sent by the scheduler after commit, with the same retries. Providers:
- `none` (the default): no sender; `Outbox.require_sms()` refuses with `sms_unavailable`.
- `log`, for development: the text, code included, goes to the server log at WARNING, marked as not sent.
  Never on a server real people use: anyone reading the log could take over a phone factor.
- `http`: a POST to `sms_url` with `sms_body_template` as the body, `{to}` and `{text}` replaced by the
  number and the text escaped for a JSON string, `Content-Type: sms_content_type`, and
  `Authorization: Bearer <token>` when `sms_token_file` (or TOKENIM_SMS_TOKEN) gives one. Any 2xx answer
  is success; anything else, or no answer within `sms_timeout_seconds`, is retried. No redirects are followed.
"""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import urlsplit

import httpx

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.names import printable
from tokenim.server.config import SmsConfig, SmsProvider
from tokenim.server.outbox import DeliveryFailed, OutgoingSms, SmsTransport

log = logging.getLogger("tokenim.sms")
_PLACEHOLDER = re.compile(r"\{(to|text)\}")


def json_escaped(text: str) -> str:
    """`text` as it goes between the quotes of a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


class LogSmsSender:
    """Development only: writes the text (and so the code) to the server log instead of sending it."""

    async def send(self, sms: OutgoingSms) -> None:
        log.warning(
            "SMS NOT SENT (sms_provider = log, for development only) to %s: %s", printable(sms.to, 40), printable(sms.text, 500)
        )


class HttpSmsSender:
    """POSTs each text to an HTTP gateway, the body made from a template."""

    def __init__(self, config: SmsConfig) -> None:
        url = urlsplit(config.sms_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise TokenIMError(ErrorCode.BAD_CONFIG, 'sms_provider = "http" needs sms_url, an http:// or https:// address.')
        if set(_PLACEHOLDER.findall(config.sms_body_template)) != {"to", "text"}:
            raise TokenIMError(ErrorCode.BAD_CONFIG, "sms_body_template must contain both {to} and {text}.")
        self._config = config
        self._token = config.token()  # a bad file stops the server at start

    def body(self, sms: OutgoingSms) -> str:
        """The request body: the template with `{to}` and `{text}` replaced in one pass (a text holding
        `{to}` stays as it is), each JSON-escaped."""
        values = {"to": json_escaped(sms.to), "text": json_escaped(sms.text)}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self._config.sms_body_template)

    async def send(self, sms: OutgoingSms) -> None:
        """POST the text; anything but a 2xx answer is `DeliveryFailed` with the status (never the body)."""
        headers = {"Content-Type": self._config.sms_content_type}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with httpx.AsyncClient(timeout=self._config.sms_timeout_seconds, follow_redirects=False) as client:
                resp = await client.post(self._config.sms_url, content=self.body(sms).encode(), headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"SMS gateway {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise DeliveryFailed(f"SMS gateway HTTP {resp.status_code}")


def build_sms_sender(config: SmsConfig) -> SmsTransport | None:
    """The sender the `[sms]` section describes, or None for `sms_provider = "none"`."""
    if config.sms_provider is SmsProvider.LOG:
        log.warning("sms_provider = log: text messages (with their codes) are written to this log, not sent")
        return LogSmsSender()
    if config.sms_provider is SmsProvider.HTTP:
        return HttpSmsSender(config)
    return None
