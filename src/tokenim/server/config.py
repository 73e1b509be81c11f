"""Server configuration in sections (`[server]`, `[database]`, `[email]`, `[sms]`, `[limits]`), one frozen dataclass
each, parsed here and nowhere else: defaults, then a TOML file, then `TOKENIM_*` variables, then flags.

Every setting has one name, unique across sections, so that `TOKENIM_SMTP_HOST`, `--port` and a bare
`port = 8470` at the top of the file all find their section. Secrets (the SMTP password, the SMS
provider's token) come from a file or the environment and are never part of a printed config."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_server_name
from tokenim.core.limits import MAX_BODY_BYTES
from tokenim.protocol.link import LinkPolicy
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.services.limits import Kind, Policy


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """`[server]`: where and how `tokenim serve` listens, and its policies."""

    data_dir: Path = Path("tokenim-data")
    host: str = "127.0.0.1"
    port: int = 8470
    registration: RegistrationMode = RegistrationMode.INVITE
    server_name: str = "localhost"
    max_body_bytes: int = MAX_BODY_BYTES
    max_upload_bytes: int = 2 * 1024**3
    log_level: str = "info"
    # uvicorn's WebSocket implementation: wsproto holds an idle connection in about half the memory.
    websocket: str = "wsproto"
    # Connections (docs/admin notes in README "Connections and overload"):
    header_timeout_seconds: float = 20.0  # a request's head must arrive whole within this
    body_timeout_seconds: float = 30.0  # longest silence allowed while a request body is arriving
    max_connections: int = 0  # 0: derived from the open-file limit, with room for the database and blobs
    max_connections_per_address: int = 512  # 0: no per-address cap (behind a proxy, every client has its address)
    max_websockets_per_device: int = 8
    # Clients remind their users to rotate a master key older than this (GET /v1/whoami tells them).
    key_rotation_days: int = 365
    # What a device approving a new one hands it: the master private key, or only its signature (docs/protocol.md).
    link_policy: LinkPolicy = LinkPolicy.MASTER_KEY
    # The file holding the server key that seals secrets the server must read again (server/secret_box.py);
    # None: DATA/secret.key. TOKENIM_SECRET_KEY, if set, is the key itself and wins.
    secret_key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """`[database]`: `url` (setting name `database`: `--database`, `TOKENIM_DATABASE`); none means SQLite in the data dir."""

    url: str | None = None
    # For tests only: every commit waits this long first, as on a very slow disk, so that a test can
    # prove nothing is acknowledged before it is committed. Never set it in production.
    debug_commit_delay_ms: int = 0


class SmtpSecurity(Enum):
    """How the connection to the SMTP server is protected."""

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


@dataclass(frozen=True, slots=True)
class EmailConfig:
    """`[email]`: the SMTP server that carries codes and security notices. No `smtp_host`: no mail."""

    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""  # empty: tokenim@<server_name>
    smtp_starttls: bool = False
    smtp_tls: bool = False  # implicit TLS (port 465)
    smtp_user: str = ""
    smtp_password_file: Path | None = None
    smtp_password: str = field(default="", repr=False)  # only from TOKENIM_SMTP_PASSWORD, never from the file
    smtp_timeout_seconds: float = 10.0
    # The CA certificates (PEM) that sign the SMTP server's certificate, for a private CA; default: the system's.
    smtp_ca_file: Path | None = None

    @property
    def enabled(self) -> bool:
        """Whether the server can send mail at all."""
        return bool(self.smtp_host)

    @property
    def security(self) -> SmtpSecurity:
        """TLS from the start, upgraded with STARTTLS, or none (a relay on the same host)."""
        return SmtpSecurity.TLS if self.smtp_tls else SmtpSecurity.STARTTLS if self.smtp_starttls else SmtpSecurity.NONE

    def password(self) -> str:
        """The SMTP password, read from `smtp_password_file` when set (so it is never in the config itself)."""
        if self.smtp_password_file is None:
            return self.smtp_password
        try:
            return self.smtp_password_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenIMError(
                ErrorCode.BAD_CONFIG, f"Cannot read smtp_password_file {self.smtp_password_file}: {exc}."
            ) from None


class SmsProvider(Enum):
    """Where text messages go: nowhere, the server log (development only), or an HTTP gateway."""

    NONE = "none"
    LOG = "log"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class SmsConfig:
    """`[sms]`: the gateway that carries phone verification codes."""

    sms_provider: SmsProvider = SmsProvider.NONE
    sms_url: str = ""  # the HTTP provider's endpoint (POST)
    # The request body; `{to}` and `{text}` are replaced by the JSON-escaped number and message.
    sms_body_template: str = '{"to": "{to}", "text": "{text}"}'
    sms_content_type: str = "application/json"
    sms_token_file: Path | None = None  # sent as `Authorization: Bearer <token>` when set
    sms_token: str = field(default="", repr=False)  # only from TOKENIM_SMS_TOKEN
    sms_timeout_seconds: float = 10.0

    def token(self) -> str:
        """The provider's bearer token, read from `sms_token_file` when set (empty: no Authorization header)."""
        if self.sms_token_file is None:
            return self.sms_token
        try:
            return self.sms_token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"Cannot read sms_token_file {self.sms_token_file}: {exc}.") from None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """`[limits]`: guessing (failures count, then a lockout) and flooding (quotas per user). 0: no limit.

    The defaults are far above what a person, the test suite or `make bench` does; see docs/admin.md."""

    failure_window_seconds: int = 900  # failures older than this are forgotten
    lockout_seconds: int = 900  # how long an account or address stays locked out
    login_failures_per_account: int = 10
    login_failures_per_address: int = 50
    login_challenges_per_address: int = 600  # per minute
    code_failures_per_account: int = 5  # each of: 2FA codes, recovery codes, security answers, email/phone codes
    code_failures_per_address: int = 20
    invite_failures_per_address: int = 10
    lookup_failures_per_address: int = 30  # unauthenticated routes naming an account that does not exist
    to_device_per_minute: int = 20_000  # to-device messages a user may send
    key_claims_per_minute: int = 10_000  # one-time keys a user may claim
    blob_quota_bytes: int = 10 * 1024**3  # all of a user's files together

    def policies(self) -> dict[Kind, Policy]:
        """The limiter's policy for each kind of attempt."""
        window, lockout, minute = self.failure_window_seconds * 1000, self.lockout_seconds * 1000, 60_000
        code = Policy(self.code_failures_per_account, self.code_failures_per_address, window, lockout)
        return {
            Kind.LOGIN: Policy(self.login_failures_per_account, self.login_failures_per_address, window, lockout),
            Kind.LOGIN_CHALLENGE: Policy(0, self.login_challenges_per_address, minute, 0),
            Kind.TOTP: code,
            Kind.RECOVERY_CODE: code,
            Kind.SECURITY_ANSWER: code,
            Kind.EMAIL_CODE: code,
            Kind.PHONE_CODE: code,
            Kind.INVITE: Policy(0, self.invite_failures_per_address, window, lockout),
            Kind.LOOKUP: Policy(0, self.lookup_failures_per_address, window, lockout),
            Kind.TO_DEVICE: Policy(self.to_device_per_minute, 0, minute, 0),
            Kind.KEY_CLAIM: Policy(self.key_claims_per_minute, 0, minute, 0),
        }


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, one field per section."""

    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    email: EmailConfig = EmailConfig()
    sms: SmsConfig = SmsConfig()
    limits: LimitsConfig = LimitsConfig()

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite database inside the data directory."""
        return self.database.url or f"sqlite:///{(self.server.data_dir / 'tokenim.db').resolve()}"

    @property
    def key_file(self) -> Path:
        """Where the server key is kept, unless TOKENIM_SECRET_KEY gives it."""
        return self.server.secret_key_file or self.server.data_dir / "secret.key"


def as_config(config: Config | ServerConfig) -> Config:
    """A bare `[server]` section is a whole configuration with every other section at its defaults."""
    return config if isinstance(config, Config) else Config(server=config)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "email": EmailConfig,
    "sms": SmsConfig,
    "limits": LimitsConfig,
}
# A setting's name → (section, field). Names are unique across sections (a test keeps them so).
_ALIASES = {("database", "url"): "database"}
SETTINGS: dict[str, tuple[str, str]] = {
    _ALIASES.get((section, f.name), f.name): (section, f.name) for section, kind in _SECTIONS.items() for f in fields(kind)
}
_ZERO_ALLOWED = {"max_connections", "max_connections_per_address", "debug_commit_delay_ms"} | {
    f.name for f in fields(LimitsConfig) if f.name not in ("failure_window_seconds", "lockout_seconds")
}
_SECRETS = {"smtp_password", "sms_token"}  # from the environment only: a config file holds a *_file path instead
# Not settings: the CLI's own variables (a shell that sets them can still start a server) and the server key.
CLIENT_VARIABLES = frozenset(
    f"TOKENIM_{name}"
    for name in (
        "CONFIG",
        "PROFILE",
        "PASSPHRASE",
        "SERVER",
        "OTP",
        "DEBUG",
        "EXPORT_PASSPHRASE",
        "RECOVERY_KEY",
        "RECOVERY_PASSPHRASE",
        "SECRET_KEY",  # the server key itself: read by server/secret_box.py, never kept in the config
    )
)
_CHOICES = {
    "websocket": ("wsproto", "websockets", "websockets-sansio"),
    "log_level": ("debug", "info", "warning", "error"),
}


def _coerce(name: str, value: Any) -> Any:
    section, attr = SETTINGS[name]
    kind = {f.name: f.type for f in fields(_SECTIONS[section])}[attr]
    try:
        if kind in ("Path", "Path | None"):
            if not str(value).strip():  # an empty path is a mistake, not the current directory
                raise ValueError
            return Path(str(value))
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool | float):  # TOML `port = true` or `= 8470.5` is a mistake, not 1 or 8470
                raise ValueError
            number = int(value)
            too_big = name in ("port", "smtp_port") and number > 65535
            if number < 0 or (number == 0 and name not in _ZERO_ALLOWED) or too_big:
                raise ValueError
            return number
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            seconds = float(value)
            if not 0 < seconds <= 86_400:
                raise ValueError
            return seconds
        enums: dict[str, type[Enum]] = {
            "LinkPolicy": LinkPolicy,
            "RegistrationMode": RegistrationMode,
            "SmsProvider": SmsProvider,
        }
        if kind in enums:
            return enums[kind](str(value))
        if not isinstance(value, str | int):  # a TOML table or list where a word was expected
            raise ValueError
        text = str(value)
        if name == "server_name":
            return check_server_name(text)
        if name in _CHOICES and text not in _CHOICES[name]:
            raise ValueError
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError
        return text
    except (ValueError, TypeError, TokenIMError):
        shown = "(hidden)" if name in _SECRETS else repr(value)
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"Bad value for '{name}' ({kind}): {shown}.") from None


def _apply(cfg: Config, values: Mapping[str, Any], source: str, *, in_section: str | None = None) -> Config:
    changes: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if in_section == "database" and name == "url":
            name = "database"
        if name not in SETTINGS or (in_section is not None and SETTINGS[name][0] != in_section):
            where = f"[{in_section}] of {source}" if in_section else source
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"Unknown setting '{key}' in {where}.")
        if name in _SECRETS and not source.startswith("the environment"):
            raise TokenIMError(
                ErrorCode.BAD_CONFIG, f"'{key}' is a secret: set TOKENIM_{name.upper()} or name a file with '{name}_file'."
            )
        if value is not None:
            section, attr = SETTINGS[name]
            changes.setdefault(section, {})[attr] = _coerce(name, value)
    return replace(cfg, **{section: replace(getattr(cfg, section), **attrs) for section, attrs in changes.items()})


def _from_file(cfg: Config, path: str) -> Config:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"Cannot read the config file {path}: {exc.strerror}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"The config file {path} is not valid TOML: {exc}.") from None
    source = f"the config file {path}"
    # Settings above any [table]; `database = "…"` there is the setting, as before the sections existed.
    loose = {k: v for k, v in data.items() if k not in _SECTIONS or (k in SETTINGS and not isinstance(v, dict))}
    cfg = _apply(cfg, loose, source)
    for section in _SECTIONS:
        if section not in data or section in loose:
            continue
        table = data[section]
        if not isinstance(table, dict):
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"In the config file {path}, '{section}' must be a table of settings.")
        # `database = "…"` under [server] is how files written before the sections said it.
        legacy = section == "server" and "database" in table
        cfg = _apply(cfg, {k: v for k, v in table.items() if k != "database"}, source, in_section=section)
        if legacy:
            cfg = _apply(cfg, {"database": table["database"]}, source)
    return cfg


def load_config(*, config_file: str | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> Config:
    """Merge the sources, later ones winning; any problem is one `bad_config` error naming it."""
    cfg = Config()
    path = config_file or env.get("TOKENIM_CONFIG")
    if path:
        cfg = _from_file(cfg, path)
    from_env = {
        k[len("TOKENIM_") :].lower(): v
        for k, v in env.items()
        if k.startswith("TOKENIM_") and k not in CLIENT_VARIABLES and not k.startswith(("TOKENIM_TEST", "TOKENIM_AGENT"))
    }
    cfg = _apply(cfg, from_env, "the environment (TOKENIM_*)")
    return _apply(cfg, flags, "the command line")
