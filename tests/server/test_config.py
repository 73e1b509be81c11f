"""Server configuration: defaults, a TOML file, TOKENIM_* variables and flags, in that order of precedence;
every mistake is one `bad_config` line, and `tokenim serve` exits 2 with that line only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.limits import MAX_BODY_BYTES
from tokenim.server.config import (
    CLIENT_VARIABLES,
    SETTINGS,
    Config,
    DatabaseConfig,
    ServerConfig,
    SmsProvider,
    SmtpSecurity,
    load_config,
)
from tokenim.server.services.accounts import RegistrationMode
from tokenim.server.services.limits import Kind, Policy

TOKENIM = Path(sys.executable).with_name("tokenim")


def toml(tmp_path: Path, text: str | bytes, name: str = "tokenim.toml") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def bad_config(*, config_file: str | None = None, env: dict[str, str] | None = None, flags: dict[str, Any] | None = None) -> str:
    """Load, expecting a `bad_config` error; its message, checked to be one line."""
    with pytest.raises(TokenIMError) as info:
        load_config(config_file=config_file, env=env or {}, flags=flags or {})
    err = info.value
    assert err.code is ErrorCode.BAD_CONFIG and err.status == 400
    assert err.message.strip() and "\n" not in err.message
    return err.message


def test_defaults() -> None:
    cfg = load_config(config_file=None, env={}, flags={})
    assert cfg == Config()
    assert (cfg.server.host, cfg.server.port, cfg.server.registration, cfg.server.server_name) == (
        "127.0.0.1",
        8470,
        RegistrationMode.INVITE,
        "localhost",
    )
    assert (cfg.database.url, cfg.server.max_body_bytes, cfg.server.log_level, cfg.server.data_dir) == (
        None,
        MAX_BODY_BYTES,
        "info",
        Path("tokenim-data"),
    )
    assert cfg.database_url == f"sqlite:///{(Path('tokenim-data') / 'tokenim.db').resolve()}"


def test_a_toml_file(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        'port = 9000\nhost = "0.0.0.0"\nregistration = "open"\nserver-name = "chat.example.com"\n'
        f'data_dir = "{tmp_path / "data"}"\ndatabase = "postgresql://db.example.com/tokenim"\nlog_level = "warning"\n',
    )
    cfg = load_config(config_file=path, env={}, flags={})
    assert cfg.server.port == 9000 and cfg.server.host == "0.0.0.0" and cfg.server.registration is RegistrationMode.OPEN
    assert (
        cfg.server.server_name == "chat.example.com"
        and cfg.server.data_dir == tmp_path / "data"
        and cfg.server.log_level == "warning"
    )
    assert cfg.database_url == "postgresql://db.example.com/tokenim"
    # The settings may also sit in a [server] table.
    cfg = load_config(config_file=toml(tmp_path, "[server]\nport = 9001\nmax_body_bytes = 1024\n", "t.toml"), env={}, flags={})
    assert (cfg.server.port, cfg.server.max_body_bytes) == (9001, 1024)


def test_tokenim_environment_variables(tmp_path: Path) -> None:
    env = {
        "TOKENIM_PORT": "9100",
        "TOKENIM_SERVER_NAME": "env.example.com",
        "TOKENIM_REGISTRATION": "open",
        "TOKENIM_DATA_DIR": str(tmp_path),
        # The CLI's and the tests' own variables are not server settings, nor is anything without the prefix.
        "TOKENIM_PASSPHRASE": "secret",
        "TOKENIM_PROFILE": "/somewhere",
        "TOKENIM_SERVER": "http://127.0.0.1:8470",
        "TOKENIM_TEST_DATABASE_URL": "postgresql://x/y",
        "PORT": "1",
    }
    cfg = load_config(config_file=None, env=env, flags={})
    assert (cfg.server.port, cfg.server.server_name, cfg.server.registration, cfg.server.data_dir) == (
        9100,
        "env.example.com",
        RegistrationMode.OPEN,
        tmp_path,
    )
    assert cfg.database.url is None
    # TOKENIM_CONFIG names the file when --config doesn't.
    cfg = load_config(config_file=None, env={"TOKENIM_CONFIG": toml(tmp_path, "port = 9300\n")}, flags={})
    assert cfg.server.port == 9300


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    path = toml(tmp_path, 'port = 9000\nhost = "10.0.0.1"\nserver_name = "file.example.com"\nlog_level = "debug"\n')
    env = {"TOKENIM_PORT": "9100", "TOKENIM_HOST": "10.0.0.2"}
    cfg = load_config(config_file=path, env=env, flags={"port": "9200", "host": None, "server_name": None})
    assert cfg.server.port == 9200  # flag over environment over file
    assert cfg.server.host == "10.0.0.2"  # environment over file; an unset flag (None) changes nothing
    assert cfg.server.server_name == "file.example.com" and cfg.server.log_level == "debug"  # only the file says
    # --config wins over TOKENIM_CONFIG.
    other = toml(tmp_path, "port = 9400\n", "other.toml")
    assert load_config(config_file=other, env={"TOKENIM_CONFIG": path}, flags={}).server.port == 9400


@pytest.mark.parametrize(
    ("source", "key", "value"),
    [
        ("flags", "port", "abc"),
        ("flags", "port", "0"),
        ("flags", "port", "65536"),
        ("flags", "port", "-1"),
        ("env", "port", "abc"),
        ("file", "port", '"abc"'),
        ("file", "port", "true"),
        ("file", "port", "8470.5"),
        ("file", "port", "[8470]"),
        ("flags", "registration", "maybe"),
        ("env", "registration", "maybe"),
        ("file", "registration", '"maybe"'),
        ("flags", "server_name", "not a name!"),
        ("flags", "log_level", "loud"),
        ("env", "websocket", "carrier-pigeon"),
        ("env", "max_body_bytes", "0"),
        ("file", "max_upload_bytes", "-5"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, source: str, key: str, value: str) -> None:
    if source == "flags":
        message = bad_config(flags={key: value})
    elif source == "env":
        message = bad_config(env={f"TOKENIM_{key.upper()}": value})
    else:
        message = bad_config(config_file=toml(tmp_path, f"{key} = {value}\n"))
    assert f"'{key}'" in message


def test_unknown_settings_are_refused_from_every_source(tmp_path: Path) -> None:
    assert "'colour'" in bad_config(flags={"colour": "blue"})
    message = bad_config(env={"TOKENIM_COLOUR": "blue"})
    assert "'colour'" in message and "TOKENIM_" in message
    path = toml(tmp_path, 'colour = "blue"\n')
    message = bad_config(config_file=path)
    assert "'colour'" in message and path in message


def test_an_unreadable_or_invalid_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    assert "Cannot read" in bad_config(config_file=missing) and missing in bad_config(config_file=missing)
    assert "Cannot read" in bad_config(config_file=str(tmp_path))  # a directory
    assert "Cannot read" in bad_config(env={"TOKENIM_CONFIG": missing})
    for text in ["port = \n", "[server\n", "port = 1\nport = 2\n", 'host = "unterminated\n']:
        assert "not valid TOML" in bad_config(config_file=toml(tmp_path, text)), text
    assert "not valid TOML" in bad_config(config_file=toml(tmp_path, b"\xff\xfeport = 1\n"))  # not UTF-8
    assert "'server'" in bad_config(config_file=toml(tmp_path, 'server = "oops"\n'))


# ---- tokenim serve ---------------------------------------------------------------------------------


def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
    return subprocess.run(
        [str(TOKENIM), "serve", *args],
        cwd=tmp_path,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tokenim serve: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_serve_with_a_bad_port_exits_2_with_one_line(tmp_path: Path) -> None:
    assert_one_line_exit_2(serve(tmp_path, "--port", "nope"), "'port'", "'nope'")
    assert not (tmp_path / "tokenim-data").exists()  # nothing was created before the check


def test_serve_with_other_bad_settings_exits_2_with_one_line(tmp_path: Path) -> None:
    assert_one_line_exit_2(serve(tmp_path, env={"TOKENIM_REGISTRATION": "maybe"}), "'registration'")
    assert_one_line_exit_2(serve(tmp_path, "--config", toml(tmp_path, 'server = "oops"\n')), "'server'")
    assert_one_line_exit_2(serve(tmp_path, "--config", str(tmp_path / "missing.toml")), "missing.toml")
    assert not (tmp_path / "tokenim-data").exists()


def test_connection_limits_and_timeouts(tmp_path: Path) -> None:
    text = (
        "header_timeout_seconds = 0.5\nbody_timeout_seconds = 2\nmax_connections = 0\n"
        "max_connections_per_address = 0\nmax_websockets_per_device = 3\ndebug_commit_delay_ms = 25\n"
    )
    cfg = load_config(config_file=toml(tmp_path, text), env={"TOKENIM_MAX_CONNECTIONS": "100"}, flags={})
    assert (cfg.server.header_timeout_seconds, cfg.server.body_timeout_seconds) == (0.5, 2.0)
    assert (cfg.server.max_connections, cfg.server.max_connections_per_address, cfg.server.max_websockets_per_device) == (
        100,
        0,
        3,
    )
    assert cfg.database.debug_commit_delay_ms == 25 and DatabaseConfig().debug_commit_delay_ms == 0
    assert "header_timeout_seconds" in bad_config(flags={"header_timeout_seconds": 0})
    assert "body_timeout_seconds" in bad_config(flags={"body_timeout_seconds": True})
    assert "max_websockets_per_device" in bad_config(flags={"max_websockets_per_device": 0})
    assert "max_connections" in bad_config(flags={"max_connections": -1})
    assert "debug_commit_delay_ms" in bad_config(flags={"debug_commit_delay_ms": 1.5})


def test_key_rotation_days(tmp_path: Path) -> None:
    assert ServerConfig().key_rotation_days == 365
    cfg = load_config(config_file=toml(tmp_path, "key_rotation_days = 90\n"), env={}, flags={})
    assert cfg.server.key_rotation_days == 90
    assert "key_rotation_days" in bad_config(flags={"key_rotation_days": 0})


# ---- sections ----------------------------------------------------------------------------------------


def test_each_section_is_a_toml_table_and_each_setting_has_one_name(tmp_path: Path) -> None:
    text = (
        'registration = "open"\n'  # settings above the tables still find their section
        "[server]\nport = 9001\n"
        '[database]\nurl = "postgresql://db.example.com/tokenim"\n'
        '[email]\nsmtp_host = "mail.example.com"\nsmtp_port = 587\nsmtp_starttls = true\nsmtp_user = "tokenim"\n'
        f'smtp_password_file = "{tmp_path / "smtp.pw"}"\nsmtp_from = "chat@example.com"\n'
        '[sms]\nsms_provider = "http"\nsms_url = "http://127.0.0.1:9/send"\n'
    )
    (tmp_path / "smtp.pw").write_text("s3cret\n")
    cfg = load_config(config_file=toml(tmp_path, text), env={"TOKENIM_SMTP_PORT": "2525"}, flags={})
    assert cfg.server.port == 9001 and cfg.server.registration is RegistrationMode.OPEN
    assert cfg.database_url == "postgresql://db.example.com/tokenim"
    assert (cfg.email.smtp_host, cfg.email.smtp_port, cfg.email.smtp_user) == ("mail.example.com", 2525, "tokenim")
    assert cfg.email.security is SmtpSecurity.STARTTLS and cfg.email.enabled
    assert cfg.email.password() == "s3cret"  # read from the file when needed, never held in the config
    assert "s3cret" not in repr(cfg)
    assert cfg.sms.sms_provider is SmsProvider.HTTP
    # A setting in the wrong table is named with its table; the legacy `database` under [server] still works.
    assert "[email]" in bad_config(config_file=toml(tmp_path, "[email]\nport = 1\n", "wrong.toml"))
    legacy = load_config(config_file=toml(tmp_path, '[server]\ndatabase = "sqlite:///x.db"\n', "old.toml"), env={}, flags={})
    assert legacy.database_url == "sqlite:///x.db"
    assert "'database'" in bad_config(config_file=toml(tmp_path, "[database]\nurl = 5.5\n", "bad.toml"))


def test_secrets_come_from_the_environment_or_a_file_and_are_never_shown(tmp_path: Path) -> None:
    cfg = load_config(config_file=None, env={"TOKENIM_SMTP_PASSWORD": "hunter2", "TOKENIM_SMS_TOKEN": "tok"}, flags={})
    assert cfg.email.password() == "hunter2" and cfg.sms.sms_token == "tok"
    assert "hunter2" not in repr(cfg) and "tok'" not in repr(cfg)
    message = bad_config(config_file=toml(tmp_path, '[email]\nsmtp_password = "hunter2"\n'))
    assert "TOKENIM_SMTP_PASSWORD" in message and "hunter2" not in message
    message = bad_config(env={"TOKENIM_SMTP_PORT": "hunter2x"})
    assert "'smtp_port'" in message
    unreadable = load_config(config_file=None, env={"TOKENIM_SMTP_PASSWORD_FILE": str(tmp_path / "none")}, flags={})
    with pytest.raises(TokenIMError) as info:
        unreadable.email.password()
    assert info.value.code is ErrorCode.BAD_CONFIG and "smtp_password_file" in info.value.message


def test_setting_names_are_unique_across_sections_and_the_cli_variables_are_not_settings() -> None:
    names = [name for name, (section, attr) in SETTINGS.items()]
    assert len(names) == len(set(names))
    assert SETTINGS["database"] == ("database", "url") and SETTINGS["smtp_host"] == ("email", "smtp_host")
    env = dict.fromkeys(CLIENT_VARIABLES - {"TOKENIM_CONFIG"}, "x")
    assert load_config(config_file=None, env=env, flags={}) == Config()
    assert "smtp_starttls" in bad_config(env={"TOKENIM_SMTP_STARTTLS": "perhaps"})
    assert "sms_provider" in bad_config(env={"TOKENIM_SMS_PROVIDER": "pigeon"})
    assert "smtp_host" in bad_config(flags={"smtp_host": "evil\r\nRCPT TO:<x>"})  # no header injection via config


def test_the_server_key_setting_and_variable(tmp_path: Path) -> None:
    """`secret_key_file` is a setting like the others; TOKENIM_SECRET_KEY is the key itself, never a setting."""
    assert Config().key_file == Path("tokenim-data") / "secret.key"
    env = {"TOKENIM_SECRET_KEY_FILE": str(tmp_path / "k"), "TOKENIM_SECRET_KEY": "ab" * 32, "TOKENIM_OTP": "123456"}
    cfg = load_config(config_file=None, env=env, flags={})
    assert cfg.key_file == tmp_path / "k"
    assert "ab" * 32 not in repr(cfg)


def test_serve_with_a_key_file_others_can_read_exits_2_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_text("ab" * 32)
    (data / "secret.key").chmod(0o644)
    assert_one_line_exit_2(serve(tmp_path, "--data", str(data)), "chmod 600")
    assert not (data / "tokenim.db").exists()  # refused before the database was opened


def test_limits_section(tmp_path: Path) -> None:
    text = "[limits]\nlogin_failures_per_account = 4\nblob_quota_bytes = 0\nlockout_seconds = 60\n"
    cfg = load_config(config_file=toml(tmp_path, text), env={"TOKENIM_CODE_FAILURES_PER_ACCOUNT": "7"}, flags={})
    assert (cfg.limits.login_failures_per_account, cfg.limits.blob_quota_bytes, cfg.limits.lockout_seconds) == (4, 0, 60)
    policies = cfg.limits.policies()
    assert policies[Kind.LOGIN] == Policy(4, 50, 900_000, 60_000)
    # 2FA codes, recovery codes, security answers and emailed or texted codes share the code limits.
    assert {policies[k].per_account for k in (Kind.TOTP, Kind.RECOVERY_CODE, Kind.SECURITY_ANSWER, Kind.EMAIL_CODE)} == {7}
    assert SETTINGS["to_device_per_minute"] == ("limits", "to_device_per_minute")
    assert "'lockout_seconds'" in bad_config(env={"TOKENIM_LOCKOUT_SECONDS": "0"})  # 0 is "no limit" only for counts
    assert "'to_device_per_minute'" in bad_config(flags={"to_device_per_minute": -1})
