"""`tokenim` commands. Errors print one sentence (or the error object with --json) and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx

from tokenim import __version__
from tokenim.cli import account, audit, backup, chat, key_files, keys, link, messages, rooms, two_factor, verify
from tokenim.cli.output import clean, emit, emit_json
from tokenim.cli.prompt import PromptAborted, given_code, read_passphrase
from tokenim.client import ProfileStore
from tokenim.core.errors import ErrorCode, TokenIMError

Handler = Callable[[argparse.Namespace], Awaitable[Any]]
Human = Callable[[dict[str, Any], argparse.Namespace], str]


def default_profile() -> Path:
    """`$TOKENIM_PROFILE`, else `$XDG_CONFIG_HOME/tokenim/default` (or `~/.config/tokenim/default`)."""
    if os.environ.get("TOKENIM_PROFILE"):
        return Path(os.environ["TOKENIM_PROFILE"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tokenim" / "default"


def _path(text: str) -> Path:
    """A path option: an empty one is refused (Path('') would quietly mean the current folder)."""
    return Path(_nonempty(text))


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no file or folder")
    return text


class UsageError(Exception):
    """A command line argparse could not make sense of; printed like any other error."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises instead of printing and exiting, so `--json` can shape it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # `--pass` must not quietly mean --passphrase-file: an option is named in full, or it is an error.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _epilog() -> str:
    return (
        "The profile (this device's keys, encrypted) is --profile, else $TOKENIM_PROFILE, else "
        f"{default_profile()}. Its passphrase comes from --passphrase-file, else $TOKENIM_PASSPHRASE, "
        "else a prompt. With --json, results and errors are JSON objects (see docs/cli.md)."
    )


def _common() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text (default: text)"
    )
    common.add_argument(
        "--profile",
        type=_path,
        default=argparse.SUPPRESS,
        help=f"profile directory (default: $TOKENIM_PROFILE, else {default_profile()})",
    )
    common.add_argument(
        "--passphrase-file",
        type=_nonempty,
        default=argparse.SUPPRESS,
        help="read the profile passphrase from this file (default: $TOKENIM_PASSPHRASE, else a prompt)",
    )
    common.add_argument(
        "--otp",
        metavar="CODE",
        default=argparse.SUPPRESS,
        help="a current two-factor code, for what needs one while two-factor authentication is on "
        "(default: $TOKENIM_OTP, else asked at a terminal when the server asks)",
    )
    return common


def _sub(sub: Any, name: str, text: str, common: argparse.ArgumentParser, handler: Handler | None, human: Human | None) -> Any:
    p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", parents=[common], epilog=_epilog())
    if handler is not None:
        p.set_defaults(handler=handler, human=human)
    return p


def _add_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the server", description="Run the TokenIM server.")
    serve.add_argument("--config", help="a TOML config file (default: $TOKENIM_CONFIG, else none)")
    serve.add_argument("--data", dest="data_dir", help="data directory (default: ./tokenim-data)")
    serve.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", help="port to listen on (default: 8470, or $TOKENIM_PORT)")
    serve.add_argument("--database", help="sqlite:///PATH or postgresql://… (default: SQLite in the data directory)")
    serve.add_argument("--registration", choices=["invite", "open"], help="who may register (default: invite)")
    serve.add_argument("--server-name", help="the name in user ids, @user:NAME (default: localhost)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log detail (default: info)")


def _add_account(sub: Any, common: argparse.ArgumentParser) -> None:
    reg = _sub(sub, "register", "create an account: keys are made here", common, account.cmd_register, _h(account.human_register))
    reg.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8470 (required)")
    reg.add_argument("--username", required=True, help="your user name, lower case (required)")
    reg.add_argument("--email", help="your e-mail address (default: none)")
    reg.add_argument("--invite", help="invite code from an admin, any case, dashes optional (default: none)")
    _sub(sub, "login", "log in by signing a server challenge", common, account.cmd_login, _h(account.human_login))
    out = _sub(sub, "logout", "end this session on the server", common, account.cmd_logout, _h(account.human_logout))
    out.add_argument("--all", action="store_true", help="end every session of your account, on all devices (default: off)")
    _sub(sub, "whoami", "show the logged-in user", common, account.cmd_whoami, _h(account.human_whoami))
    dev = _sub(
        sub,
        "devices",
        "list, remove or revoke your devices, link a new device or approve one being linked",
        common,
        link.devices_handler(account.cmd_devices),
        link.devices_human(_h(account.human_devices)),
    )
    dev.add_argument(
        "action",
        nargs="?",
        choices=["list", "remove", "revoke", *link.LINK_ACTIONS],
        default="list",
        help="what to do (default: list)",
    )
    dev.add_argument("device_id", nargs="?", help="remove, revoke: the device (not the one in use); approve: the code")
    dev.add_argument("--server", help="link: the server URL, e.g. http://127.0.0.1:8470 (required with link)")
    dev.add_argument("--username", help="link: your user name (required with link)")
    dev.add_argument(
        "--force",
        action="store_true",
        help="remove, on a device that no longer holds your current master key: remove the other device anyway, "
        "though it may be the only one holding that key (default: refuse)",
    )
    key = _sub(sub, "keys", "your keys", common, None, None)
    key_sub = key.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    show = _sub(key_sub, "show", "master key, fingerprint and device keys", common, keys.cmd_keys_show, _h(keys.human_keys))
    show.add_argument("user", nargs="?", metavar="@USER", help="a contact's keys instead of yours (default: yours)")
    accept = _sub(
        key_sub,
        "accept",
        "accept a contact's new master key, after comparing it",
        common,
        keys.cmd_keys_accept,
        _h(keys.human_keys),
    )
    accept.add_argument("user", metavar="@USER", help="the contact whose new key you compared with them")
    accept.add_argument(
        "--fingerprint",
        help="the new key's fingerprint as they read it to you (default: asked for at a terminal)",
    )
    _sub(
        key_sub,
        "rotate",
        "replace your master key with a new one, signed over",
        common,
        keys.cmd_keys_rotate,
        _h(keys.human_rotated),
    )
    _sub(
        key_sub, "status", "how old your keys are, and when rotation is due", common, keys.cmd_keys_status, _h(keys.human_status)
    )
    _add_key_files(key_sub, common)
    admin = _sub(sub, "admin", "organisation administration", common, None, None)
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    invite = _sub(admin_sub, "invite", "invites", common, None, None)
    invite_sub = invite.add_subparsers(dest="invite_command", required=True, metavar="ACTION")
    create = _sub(invite_sub, "create", "create a one-time invite", common, account.cmd_invite_create, _h(account.human_invite))
    create.add_argument("--expires", default="7d", help="how long it stays valid, e.g. 7d, 12h, 30m (default: 7d)")
    log = _sub(
        admin_sub,
        "audit",
        "the server's audit log, newest first; `verify` checks its hash chain",
        common,
        audit.cmd_admin_audit,
        _h(audit.human_admin_audit),
    )
    log.add_argument(
        "audit_action",
        nargs="?",
        choices=["list", "verify"],
        default="list",
        metavar="list|verify",
        help="list the records, or verify the whole chain (exit status 1 when it is broken) (default: list)",
    )
    log.add_argument("--user", metavar="@USER", help="list: only this person's records (default: everyone's)")
    log.add_argument("--limit", type=int, default=50, help="list: how many records, 1 to 1000 (default: 50)")
    log.add_argument("--before", type=int, help="list: records older than this id, as the last page said (default: newest)")
    sec = _sub(sub, "security", "your account's security", common, None, None)
    sec_sub = sec.add_subparsers(dest="security_command", required=True, metavar="ACTION")
    review = _sub(
        sec_sub,
        "review",
        "your recent logins and activity, and what looks wrong",
        common,
        audit.cmd_security_review,
        _h(audit.human_review),
    )
    review.add_argument("--days", type=int, default=30, help="how far back, 1 to 365 days (default: 30)")


def _add_key_files(key_sub: Any, common: argparse.ArgumentParser) -> None:
    exp = _sub(
        key_sub,
        "export",
        "write your master key to an encrypted file (PKCS#8 PEM)",
        common,
        key_files.cmd_export_master,
        _h(key_files.human_export_master),
    )
    exp.add_argument("--out", required=True, type=_nonempty, help="the file to create; never replaced (required)")
    imp = _sub(
        key_sub,
        "import",
        "make a new device (in a new --profile) from an exported master key",
        common,
        key_files.cmd_import_master,
        _h(key_files.human_import_master),
    )
    imp.add_argument("file", type=_nonempty, help="the file `tokenim keys export` wrote")
    imp.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8470 (required)")
    imp.add_argument("--username", required=True, help="the user whose key it is (required)")
    exr = _sub(
        key_sub,
        "export-room-keys",
        "write every room key this device holds to an encrypted file (Matrix key export format)",
        common,
        key_files.cmd_export_room_keys,
        _h(key_files.human_export_room_keys),
    )
    exr.add_argument("--out", required=True, type=_nonempty, help="the file to create; never replaced (required)")
    imr = _sub(
        key_sub,
        "import-room-keys",
        "read older messages here: import room keys exported on another device",
        common,
        key_files.cmd_import_room_keys,
        _h(key_files.human_import_room_keys),
    )
    imr.add_argument("file", type=_nonempty, help="the file `tokenim keys export-room-keys` wrote")


def _add_rooms(sub: Any, common: argparse.ArgumentParser) -> None:
    _sub(sub, "rooms", "list your rooms", common, rooms.cmd_rooms, _h(rooms.human_rooms))
    room = _sub(sub, "room", "create and manage rooms (ROOM: a room name or id)", common, None, None)
    room_sub = room.add_subparsers(dest="room_command", required=True, metavar="ACTION")
    human = _room_human
    rc = _sub(room_sub, "create", "create a group room", common, rooms.cmd_room, human)
    rc.add_argument("name", nargs="?", help="the room's name, distinct among your rooms")
    rc.add_argument(
        "--invite",
        action="extend",
        nargs="+",
        default=[],
        metavar="@USER",
        help="people to invite: repeat it, or list several (@a @b, or @a,@b) (default: nobody)",
    )
    for name, text in [("invite", "invite people"), ("remove", "remove people (room admins)")]:
        p = _sub(room_sub, name, text, common, rooms.cmd_room, human)
        p.add_argument("room", help="room name or id")
        p.add_argument("users", nargs="+", metavar="@USER", help="one or more people")
    for name, text in [("join", "accept an invitation"), ("leave", "leave a room"), ("members", "list members")]:
        _sub(room_sub, name, text, common, rooms.cmd_room, human).add_argument("room", help="room name or id")
    rn = _sub(room_sub, "rename", "rename a room (room admins)", common, rooms.cmd_room, human)
    rn.add_argument("room", help="room name or id")
    rn.add_argument("name", help="the new name, distinct among your rooms")


def _add_messages(sub: Any, common: argparse.ArgumentParser) -> None:
    send = _sub(sub, "send", "send a text message", common, messages.cmd_send, _h(messages.human_sent))
    send.add_argument("target", help="@user (a direct chat, started if needed), a room name or a room id")
    send.add_argument("text", nargs="?", help="the message; '-' reads it from standard input")
    send.add_argument("--file", help="read the message text (UTF-8) from this file (default: none)")
    sf = _sub(sub, "send-file", "send an encrypted file", common, messages.cmd_send_file, _h(messages.human_sent))
    sf.add_argument("target", help="@user, a room name or a room id")
    sf.add_argument("path", type=_nonempty, help="the file to send")
    dl = _sub(
        sub, "download", "download and decrypt a file from a message", common, messages.cmd_download, _h(messages.human_download)
    )
    dl.add_argument("event", help="the message id ($…), as `tokenim read` shows it")
    dl.add_argument(
        "--out", type=_nonempty, help="file or folder to save to (default: the file's own name, in the current folder)"
    )
    dl.add_argument("--force", action="store_true", help="replace an existing file (default: never replace)")
    rd = _sub(sub, "read", "sync, then show a room's latest messages", common, messages.cmd_read, _h(messages.human_read))
    rd.add_argument("target", help="@user (an existing direct chat), a room name or a room id")
    rd.add_argument("--limit", type=int, default=20, help="how many messages, 1 to 1000 (default: 20)")
    _sub(sub, "listen", "stream incoming messages until interrupted (reconnects by itself)", common, messages.cmd_listen, None)
    ch = _sub(sub, "chat", "the terminal app: rooms, messages and files, live (keys: ? inside)", common, chat.cmd_chat, None)
    ch.add_argument(
        "--serve",
        action="store_true",
        help="serve the app to a browser on this computer, at http://127.0.0.1:PORT; each page asks for the passphrase "
        "(default: run in this terminal)",
    )
    ch.add_argument("--port", type=int, default=8471, help="with --serve: the port on 127.0.0.1 (default: 8471)")
    ch.add_argument(
        "--notify",
        choices=["desktop", "bell", "off"],
        default="desktop",
        help="on a mention or a direct message: the bell and a desktop notification (notify-send, when installed), "
        "the bell only, or nothing (default: desktop)",
    )
    ch.add_argument(
        "--in-browser",
        action="store_true",
        help="what --serve runs for each page: ask for the passphrase in the app, not at a prompt (default: off)",
    )


def _add_backup(sub: Any, common: argparse.ArgumentParser) -> None:
    bk = _sub(sub, "backup", "the encrypted backup of your room keys on the server", common, None, None)
    bk_sub = bk.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    create = _sub(
        bk_sub,
        "create",
        "back up this device's room keys (a new backup)",
        common,
        backup.cmd_backup_create,
        _h(backup.human_created),
    )
    create.add_argument(
        "--passphrase",
        dest="recovery_passphrase",
        action="store_true",
        help="protect it with a recovery passphrase ($TOKENIM_RECOVERY_PASSPHRASE, else asked) (default: a recovery key)",
    )
    create.add_argument(
        "--replace",
        action="store_true",
        help="replace the existing backup: its recovery key or passphrase stops working, and room keys only in it "
        "are lost (default: refuse when a backup exists)",
    )
    restore = _sub(
        bk_sub, "restore", "import the backed-up room keys here", common, backup.cmd_backup_restore, _h(backup.human_restored)
    )
    restore.add_argument(
        "--passphrase",
        dest="recovery_passphrase",
        action="store_true",
        help="use the recovery passphrase (default: the recovery key, from $TOKENIM_RECOVERY_KEY or asked)",
    )
    _sub(
        bk_sub,
        "status",
        "whether a backup exists and this device backs up",
        common,
        backup.cmd_backup_status,
        _h(backup.human_status),
    )


def _add_verify(sub: Any, common: argparse.ArgumentParser) -> None:
    human = _h(verify.human_verified)
    text = "your safety number with someone, to compare out of band"
    fp = _sub(sub, "fingerprint", text, common, verify.cmd_fingerprint, human)
    fp.add_argument("user", metavar="@USER", help="the other person")
    fp.add_argument(
        "--mark-verified",
        action="store_true",
        help="record them as verified after they read you the same number (default: only show it)",
    )
    fp.add_argument("--number", help="with --mark-verified: the number as they read it (default: asked at a terminal)")
    vf = _sub(sub, "verify", "verify someone by comparing emoji (both of you run it)", common, verify.cmd_verify, human)
    vf.add_argument("user", metavar="@USER", help="the other person; they run `tokenim verify @you` at the same time")


def _h(fn: Callable[[dict[str, Any]], str]) -> Human:
    return lambda result, _args: fn(result)


def _room_human(result: dict[str, Any], args: argparse.Namespace) -> str:
    return rooms.human_room(result, args.room_command)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = Parser(prog="tokenim", description="TokenIM: end-to-end encrypted messaging.", parents=[common], epilog=_epilog())
    parser.add_argument("--version", action="version", version=f"tokenim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_account(sub, common)
    _add_rooms(sub, common)
    _add_messages(sub, common)
    _add_backup(sub, common)
    _add_verify(sub, common)
    two_factor.add_parser(sub, common, _sub)
    return parser


def _fail(err: TokenIMError, as_json: bool) -> int:
    if as_json:
        emit_json(err.to_json())
    else:
        emit(f"tokenim: {clean(err.message)}", sys.stderr)
    return 1


def _prepare(args: argparse.Namespace) -> None:
    """Profile and passphrase, before the event loop (so Ctrl-C at the prompt is seen at once)."""
    args.profile = getattr(args, "profile", None) or default_profile()
    check_wire_text(args)
    given_code(args)  # a malformed --otp or TOKENIM_OTP is refused before any passphrase is asked
    if args.profile.exists() and not args.profile.is_dir():
        raise TokenIMError(ErrorCode.BAD_CONFIG, f"{args.profile} is a file: a profile is a folder, give --profile a folder.")
    linking = args.command == "devices" and args.action == "link"
    if linking:
        link.check_link_args(args)
    new = args.command == "register" or (args.command == "keys" and args.keys_command == "import") or linking
    if new:
        account.check_server_url(args.server)
    if new and ProfileStore.exists(args.profile):
        raise TokenIMError(ErrorCode.PROFILE_EXISTS, f"There is already a profile in {args.profile}: use another --profile.")
    if new and args.command == "keys":
        key_files.check_readable(Path(args.file))  # before the passphrase prompts
    user_inputs = [args.username, "tokenim"] if new else []
    if args.command == "chat" and (args.serve or args.in_browser):
        args.passphrase = None  # asked in the browser's page, by the app (tui/serve.py says why)
        return
    args.passphrase = read_passphrase(getattr(args, "passphrase_file", None), new=new, user_inputs=user_inputs)


# Arguments that travel to the server (or into a message), and how a sentence names them.
_WIRE_TEXT = {
    "text": "The message",
    "target": "The room or person",
    "room": "The room",
    "name": "The room name",
    "users": "A person",
    "invite": "The invite",
    "username": "The user name",
    "email": "The e-mail address",
    "user": "The person",
    "fingerprint": "The fingerprint",
    "number": "The safety number",
    "event": "The message id",
    "server": "The server URL",
    "device_id": "The device id",
    "code": "The two-factor code",
    "otp": "The two-factor code",
    "recovery_code": "The recovery code",
}


def check_wire_text(args: argparse.Namespace) -> None:
    """Refuse an argument that is not UTF-8 (Python keeps such bytes as lone surrogates), as stdin and --file do."""
    for attr, what in _WIRE_TEXT.items():
        value = getattr(args, attr, None)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and any("\ud800" <= c <= "\udfff" for c in text):
                raise TokenIMError(
                    ErrorCode.INVALID_REQUEST,
                    f"{what} on the command line is not UTF-8 text (check the terminal's encoding); nothing was sent.",
                )


def local_error(exc: BaseException, args: argparse.Namespace) -> TokenIMError:
    """What failed on this computer, in one sentence: a file or folder, the profile database, a URL."""
    if isinstance(exc, sqlite3.DatabaseError):
        return TokenIMError(ErrorCode.PROFILE_MISSING, f"The profile in {args.profile} is damaged or is not a TokenIM profile.")
    if isinstance(exc, httpx.InvalidURL):
        return TokenIMError(ErrorCode.BAD_CONFIG, account.BAD_URL)
    assert isinstance(exc, OSError)
    where = f" {exc.filename}" if exc.filename else ""
    return TokenIMError(ErrorCode.INVALID_REQUEST, f"Cannot use{where}: {(exc.strerror or 'the system refused').lower()}.")


def _stdout_closed() -> int:
    """The reader went away (`tokenim listen | head -1`): stop quietly, like other Unix tools."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush must not fail again
    return 141  # 128 + SIGPIPE, as a tool killed by the signal reports


def _cancelled(aborted: PromptAborted, as_json: bool) -> int:
    said = "Cancelled." if aborted.interrupted else "No passphrase given."
    if as_json:
        emit_json(TokenIMError(ErrorCode.CANCELLED, said).to_json())
    else:
        emit(f"\ntokenim: {said[0].lower()}{said[1:]}", sys.stderr)
    return 130 if aborted.interrupted else 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "chat" and args.serve:
        return chat.serve_chat(args)  # textual-serve runs its own event loop
    result = asyncio.run(args.handler(args))
    if result is None:
        return 0
    if args.json:
        emit_json(result["messages"] if args.command == "read" else result)
    else:
        emit(args.human(result, args))
    return 1 if result.get("failed") else 0  # some of several people could not be invited or removed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tokenim` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        try:
            return _fail(TokenIMError(ErrorCode.INVALID_REQUEST, str(exc)), as_json)
        except BrokenPipeError:
            return _stdout_closed()
    if args.command == "serve":
        from tokenim.server.run import serve

        flags = {
            k: getattr(args, k) for k in ("data_dir", "host", "port", "database", "registration", "server_name", "log_level")
        }
        return serve(config_file=args.config, flags=flags)
    args.json = getattr(args, "json", False)
    try:
        return _dispatch(args)
    except BrokenPipeError:  # also while reporting an error (`tokenim read x --json | true`)
        return _stdout_closed()


def _dispatch(args: argparse.Namespace) -> int:
    try:
        _prepare(args)
        return _run(args)
    except TokenIMError as err:
        return _fail(err, args.json)
    except PromptAborted as aborted:
        return _cancelled(aborted, args.json)
    except KeyboardInterrupt:  # Ctrl-C while a command runs: said like Ctrl-C at a prompt
        return _cancelled(PromptAborted(interrupted=True), args.json)
    except BrokenPipeError:
        raise
    except (OSError, sqlite3.DatabaseError, httpx.InvalidURL) as exc:
        return _fail(local_error(exc, args), args.json)
    except Exception:  # never a traceback: one sentence, and the details only when asked for
        if os.environ.get("TOKENIM_DEBUG"):
            traceback.print_exc()
        return _fail(unexpected_error(args), args.json)


def unexpected_error(args: argparse.Namespace) -> TokenIMError:
    """Something this command did not expect (often a damaged profile): say so, never show a traceback."""
    return TokenIMError(
        ErrorCode.INTERNAL,
        f"Something unexpected went wrong while running '{args.command}'; if the profile in "
        f"{getattr(args, 'profile', '?')} was changed by hand or damaged, that may be why. Nothing more was done. "
        "Set TOKENIM_DEBUG=1 to see the details.",
    )


if __name__ == "__main__":
    sys.exit(main())
