"""Server configuration: defaults, then a TOML file, then `TOKENIM_*` variables, then command-line flags."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_server_name
from tokenim.core.limits import MAX_BODY_BYTES
from tokenim.protocol.link import LinkPolicy
from tokenim.server.services.accounts import RegistrationMode


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `tokenim serve` can be told."""

    data_dir: Path = Path("tokenim-data")
    host: str = "127.0.0.1"
    port: int = 8470
    database: str | None = None
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
    # For tests only: every commit waits this long first, as on a very slow disk, so that a test can
    # prove nothing is acknowledged before it is committed. Never set it in production.
    debug_commit_delay_ms: int = 0

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite database inside the data directory."""
        return self.database or f"sqlite:///{(self.data_dir / 'tokenim.db').resolve()}"

    @property
    def key_file(self) -> Path:
        """Where the server key is kept, unless TOKENIM_SECRET_KEY gives it."""
        return self.secret_key_file or self.data_dir / "secret.key"


_ZERO_ALLOWED = {"max_connections", "max_connections_per_address", "debug_commit_delay_ms"}


def _coerce(name: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(ServerConfig)}
    kind = kinds[name]
    try:
        if name in ("data_dir", "secret_key_file"):
            if not str(value).strip():
                raise ValueError
            return Path(str(value))
        if kind == "int":
            if isinstance(value, bool | float):  # TOML `port = true` or `= 8470.5` is a mistake, not 1 or 8470
                raise ValueError
            number = int(value)
            if number < 0 or (number == 0 and name not in _ZERO_ALLOWED) or (name == "port" and number > 65535):
                raise ValueError
            return number
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            seconds = float(value)
            if not 0 < seconds <= 86_400:
                raise ValueError
            return seconds
        if name == "link_policy":
            return LinkPolicy(str(value))
        if name == "registration":
            return RegistrationMode(str(value))
        if name == "server_name":
            return check_server_name(str(value))
        if name == "websocket":
            if str(value) not in ("wsproto", "websockets", "websockets-sansio"):
                raise ValueError
            return str(value)
        if name == "log_level":
            if str(value) not in ("debug", "info", "warning", "error"):
                raise ValueError
            return str(value)
        return str(value)
    except (ValueError, TypeError, TokenIMError):
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"Bad value for '{name}' ({kind}): {value!r}.") from None


def _apply(cfg: ServerConfig, values: Mapping[str, Any], source: str) -> ServerConfig:
    known = {f.name for f in fields(ServerConfig)}
    changes = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"Unknown setting '{key}' in {source}.")
        if value is not None:
            changes[name] = _coerce(name, value)
    return replace(cfg, **changes)


def load_config(*, config_file: str | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> ServerConfig:
    """Merge the sources, later ones winning; any problem is one `bad_config` error naming it."""
    cfg = ServerConfig()
    path = config_file or env.get("TOKENIM_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"Cannot read the config file {path}: {exc.strerror}.") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"The config file {path} is not valid TOML: {exc}.") from None
        section = data.get("server", data)
        if not isinstance(section, dict):
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"In the config file {path}, 'server' must be a table of settings.")
        cfg = _apply(cfg, section, f"the config file {path}")
    # Not settings: the client's variables, and the server key itself (read by server/secret_box.py, never kept here).
    skip = {"TOKENIM_CONFIG", "TOKENIM_PROFILE", "TOKENIM_PASSPHRASE", "TOKENIM_SERVER", "TOKENIM_SECRET_KEY", "TOKENIM_OTP"}
    from_env = {
        k[len("TOKENIM_") :].lower(): v
        for k, v in env.items()
        if k.startswith("TOKENIM_") and k not in skip and not k.startswith("TOKENIM_TEST")
    }
    cfg = _apply(cfg, from_env, "the environment (TOKENIM_*)")
    return _apply(cfg, flags, "the command line")
