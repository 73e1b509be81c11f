"""`tokenim` commands. Errors print one sentence (or the error object with --json) and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from tokenim import __version__
from tokenim.client import Client
from tokenim.core.clock import SystemClock
from tokenim.core.errors import ErrorCode, TokenIMError

Handler = Callable[[argparse.Namespace], Awaitable[Any]]


def default_profile() -> Path:
    """`$TOKENIM_PROFILE`, else `$XDG_CONFIG_HOME/tokenim/default` (or `~/.config/tokenim/default`)."""
    if os.environ.get("TOKENIM_PROFILE"):
        return Path(os.environ["TOKENIM_PROFILE"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tokenim" / "default"


def read_passphrase(args: argparse.Namespace, *, confirm: bool = False) -> str:
    """From --passphrase-file, then TOKENIM_PASSPHRASE, then a prompt (twice for a new profile)."""
    if getattr(args, "passphrase_file", None):
        try:
            text = Path(args.passphrase_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"Cannot read the passphrase file: {exc.strerror}.") from None
        return text.rstrip("\r\n")
    if os.environ.get("TOKENIM_PASSPHRASE"):
        return os.environ["TOKENIM_PASSPHRASE"]
    if not sys.stdin.isatty():
        raise TokenIMError(
            ErrorCode.BAD_CONFIG, "No passphrase: use --passphrase-file or TOKENIM_PASSPHRASE when not at a terminal."
        )
    first = getpass.getpass("Profile passphrase: ")
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "The two passphrases differ.")
    return first


def parse_duration(text: str) -> int:
    """'7d', '12h', '30m' or '90s' to seconds."""
    m = re.fullmatch(r"(\d+)([dhms])", text.strip())
    if not m:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"'{text}' is not a duration: use forms like 7d, 12h, 30m.")
    return int(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m.group(2)]


async def _open(args: argparse.Namespace) -> Client:
    return await Client.open(args.profile, read_passphrase(args), clock=SystemClock())


async def cmd_register(args: argparse.Namespace) -> dict[str, Any]:
    passphrase = read_passphrase(args, confirm=True)
    async with await Client.register(
        args.profile,
        passphrase,
        server_url=args.server,
        username=args.username,
        email=args.email,
        invite=args.invite,
        clock=SystemClock(),
    ) as client:
        me = await client.whoami()
        info = client.keys_info()
        return {"user_id": me.user_id, "device_id": me.device_id, "is_admin": me.is_admin, "fingerprint": info.fingerprint}


async def cmd_login(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        tokens = await client.login()
        return {"user_id": tokens.user_id, "device_id": tokens.device_id, "logged_in": True}


async def cmd_logout(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        await client.logout()
        return {"logged_out": True}


async def cmd_whoami(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        return (await client.whoami()).model_dump()


async def cmd_devices(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        if args.action == "remove":
            if not args.device_id:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "Say which device: tokenim devices remove DEVICE_ID.")
            await client.remove_device(args.device_id)
            return {"removed": args.device_id}
        devices = await client.devices()
        return {
            "devices": [
                {
                    "device_id": d.device_id,
                    "current": d.device_id == client.device_id,
                    "created_at": d.created_at,
                    "last_seen_at": d.last_seen_at,
                    "ed25519": d.keys["keys"].get(f"ed25519:{d.device_id}"),
                }
                for d in devices.devices
            ]
        }


async def cmd_keys_show(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "user", None):
        return await cmd_contact_keys(args)
    async with await _open(args) as client:
        info = client.keys_info()
        return {
            "user_id": info.user_id,
            "master_key": info.master_key,
            "master_key_version": info.master_key_version,
            "fingerprint": info.fingerprint,
            "device_id": info.device_id,
            "device_keys": {"ed25519": info.device_ed25519, "curve25519": info.device_curve25519},
        }


async def cmd_contact_keys(args: argparse.Namespace) -> dict[str, Any]:
    """`keys show @user`: their master key and fingerprint as the server shows it, against the pinned one."""
    async with await _open(args) as client:
        return (await client.contact_keys(args.user)).to_json()


async def cmd_keys_accept(args: argparse.Namespace) -> dict[str, Any]:
    """`keys accept @user`: pin their new master key, only for the fingerprint compared with them."""
    async with await _open(args) as client:
        expected = args.fingerprint
        if expected is None:
            shown = await client.contact_keys(args.user)
            if shown.status != "changed":
                return (await client.accept_contact_key(args.user, "")).to_json()  # raises: says there is nothing to accept
            if not sys.stdin.isatty():
                raise TokenIMError(
                    ErrorCode.INVALID_REQUEST,
                    f"Not at a terminal: pass --fingerprint with {shown.user_id}'s new fingerprint as they read it to you "
                    f"(see `tokenim keys show {shown.user_id}`).",
                )
            print(_contact_keys_text(shown.to_json()))
            try:
                question = f"Accept the new key of {shown.user_id}? Only if they read you the same fingerprint [y/N]: "
                answer = await asyncio.to_thread(input, question)
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "Nothing was accepted.")
            expected = shown.current_fingerprint
        return (await client.accept_contact_key(args.user, expected)).to_json()


def _fingerprint_rows(fp: str, indent: str) -> str:
    groups = fp.split()
    return ("\n" + indent).join(" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4))


def _contact_keys_text(r: dict[str, Any]) -> str:
    status = {
        "trusted": "the pinned key: their devices get your messages",
        "pinned_now": "seen for the first time and pinned now: compare the fingerprint with them",
        "changed": "CHANGED: their devices get no messages until you compare the new fingerprint with them "
        f"and run `tokenim keys accept {r['user_id']}`",
    }[r["status"]]
    lines = [f"User:        {r['user_id']}", f"Status:      {status}"]
    pad = " " * 13
    if r["status"] == "changed":
        lines.append("Pinned:      " + _fingerprint_rows(r["pinned_fingerprint"], pad))
        lines.append("New key:     " + _fingerprint_rows(r["current_fingerprint"], pad))
    else:
        lines.append("Fingerprint: " + _fingerprint_rows(r["current_fingerprint"], pad))
    lines.append(f"Master key:  {r['current_master']}")
    for d in r["devices"]:
        key = f"  ed25519 {d['ed25519']}" if d.get("ed25519") else ""
        lines.append(f"Device:      {d['device_id']}{key}  ({d['status']})")
    return "\n".join(lines)


def _key_accepted_text(r: dict[str, Any]) -> str:
    pad = " " * 17
    return "\n".join(
        [
            f"Accepted the new master key of {r['user_id']}; their devices get your messages again.",
            "Old fingerprint: " + _fingerprint_rows(r["old_fingerprint"], pad),
            "New fingerprint: " + _fingerprint_rows(r["new_fingerprint"], pad),
        ]
    )


def _left_out_text(result: dict[str, Any]) -> str:
    """After "Sent …": every member device that did not get the message, and why."""
    excluded = result.get("excluded") or []
    if not excluded:
        return ""
    lines = [f"\nWarning: {len(excluded)} member device(s) left out; they cannot read this message:"]
    for e in excluded:
        who = e["user_id"] + (f" device {e['device_id']}" if e.get("device_id") else " (all devices)")
        lines.append(f"  {who}: {e['message']}")
    return "\n".join(lines)


async def cmd_invite_create(args: argparse.Namespace) -> dict[str, Any]:
    seconds = parse_duration(args.expires)
    async with await _open(args) as client:
        return (await client.create_invite(seconds)).model_dump()


async def cmd_rooms(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        return {"rooms": [r.model_dump() for r in (await client.rooms()).rooms]}


async def cmd_room(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        action = args.room_command
        if action == "create":
            return (await client.create_room(args.name, args.invite or [])).model_dump()
        room_id = await client.resolve_target(args.room)
        if action == "invite":
            for user in args.users:
                await client.invite(room_id, user)
            return {"room_id": room_id, "invited": [client.full_user_id(u) for u in args.users]}
        if action == "join":
            return (await client.join(room_id)).model_dump()
        if action == "leave":
            await client.leave(room_id)
            return {"room_id": room_id, "left": True}
        if action == "remove":
            for user in args.users:
                await client.remove(room_id, user)
            return {"room_id": room_id, "removed": [client.full_user_id(u) for u in args.users]}
        if action == "rename":
            await client.rename(room_id, args.name)
            return {"room_id": room_id, "name": args.name}
        return (await client.members(room_id)).model_dump()


async def cmd_send(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        room_id = await client.resolve_target(args.target)
        sent = await client.send_text(room_id, args.text)
        return {"room_id": room_id, **sent.model_dump()}


async def cmd_send_file(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        room_id = await client.resolve_target(args.target)
        sent = await client.send_file(room_id, Path(args.path))
        return {"room_id": room_id, **sent.model_dump()}


async def cmd_download(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        info = await client.download(args.event, Path(args.out))
        return {
            "event_id": args.event,
            "out": str(args.out),
            "name": info["name"],
            "size": info["size"],
            "sha256": info["sha256"],
        }


async def cmd_read(args: argparse.Namespace) -> dict[str, Any]:
    async with await _open(args) as client:
        room_id = await client.resolve_target(args.target)
        await client.sync()
        messages = await client.history(room_id, args.limit)
        return {"messages": [m.to_json() for m in messages]}


async def cmd_listen(args: argparse.Namespace) -> None:
    async with await _open(args) as client:
        async for message in client.listen():
            print(json.dumps(message.to_json()) if args.json else _message_line(message.to_json()), flush=True)


def _message_line(m: dict[str, Any]) -> str:
    if "warning" in m:
        return f"[{m['room']}] {m['sender']}: !! {m['warning']}"
    mark = "" if m["verified"] else " (unverified device)"
    body = (
        m["body"]
        if "file" not in m
        else f"[file {m['file']['name']}, {m['file']['size']} bytes: tokenim download {m['id']} --out FILE]"
    )
    return f"[{m['room']}] {m['sender']}{mark}: {body}"


def _human(command: str, result: dict[str, Any]) -> str:
    if command == "register":
        admin = " (organisation admin)" if result["is_admin"] else ""
        return (
            f"Registered {result['user_id']}{admin}, device {result['device_id']}.\nYour key fingerprint: {result['fingerprint']}"
        )
    if command == "login":
        return f"Logged in as {result['user_id']} on device {result['device_id']}."
    if command == "logout":
        return "Logged out."
    if command == "whoami":
        admin = ", admin" if result["is_admin"] else ""
        return f"{result['user_id']} (device {result['device_id']}{admin})"
    if command == "devices":
        if "removed" in result:
            return f"Removed device {result['removed']}."
        lines = []
        for d in result["devices"]:
            mark = "*" if d["current"] else " "
            lines.append(f"{mark} {d['device_id']}  ed25519 {d['ed25519']}")
        return "\n".join(lines)
    if command == "keys" and "new_fingerprint" in result:
        return _key_accepted_text(result)
    if command == "keys" and "current_fingerprint" in result:
        return _contact_keys_text(result)
    if command == "keys":
        fp = result["fingerprint"].split()
        rows = [" ".join(fp[i : i + 4]) for i in range(0, len(fp), 4)]
        return "\n".join(
            [
                f"User:        {result['user_id']}",
                f"Master key:  {result['master_key']} (version {result['master_key_version']})",
                "Fingerprint: " + ("\n             ".join(rows)),
                f"Device:      {result['device_id']}",
                f"  ed25519:     {result['device_keys']['ed25519']}",
                f"  curve25519:  {result['device_keys']['curve25519']}",
            ]
        )
    if command == "rooms":
        return (
            "\n".join(
                f"{r['room_id']}  {r['kind']:6}  {r['name'] or ', '.join(r['members'])}  ({r['membership']})"
                for r in result["rooms"]
            )
            or "No rooms yet."
        )
    if command == "room":
        return json.dumps(result, indent=2)
    if command in ("send", "send-file"):
        return f"Sent {result['event_id']} to {result['room_id']}." + _left_out_text(result)
    if command == "download":
        return f"Saved {result['name']} ({result['size']} bytes, hash checked) to {result['out']}."
    if command == "read":
        return "\n".join(_message_line(m) for m in result["messages"]) or "No messages."
    if command == "admin":
        return f"Invite code: {result['code']}\n(one use; expires at {result['expires_at']} ms since the epoch)"
    return json.dumps(result, indent=2)


def _add_keys_accept(keys_sub: Any, common: argparse.ArgumentParser) -> None:
    accept = keys_sub.add_parser("accept", help="accept a contact's new master key, after comparing it", parents=[common])
    accept.add_argument("user", metavar="@USER")
    accept.add_argument(
        "--fingerprint", help="the new key's fingerprint as they read it to you (asked for at a terminal if left out)"
    )
    accept.set_defaults(handler=cmd_keys_accept)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    common.add_argument("--profile", type=Path, default=argparse.SUPPRESS, help="profile directory (default: $TOKENIM_PROFILE)")
    common.add_argument("--passphrase-file", default=argparse.SUPPRESS, help="read the profile passphrase from this file")

    parser = argparse.ArgumentParser(prog="tokenim", description="TokenIM: end-to-end encrypted messaging.", parents=[common])
    parser.add_argument("--version", action="version", version=f"tokenim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="a TOML config file")
    serve.add_argument("--data", dest="data_dir", help="data directory (default ./tokenim-data)")
    serve.add_argument("--host")
    serve.add_argument("--port")
    serve.add_argument("--database", help="sqlite:///PATH or postgresql://…")
    serve.add_argument("--registration", choices=["invite", "open"])
    serve.add_argument("--server-name")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    reg = sub.add_parser("register", help="create an account: keys are made here", parents=[common])
    reg.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8470")
    reg.add_argument("--username", required=True)
    reg.add_argument("--email")
    reg.add_argument("--invite")
    reg.set_defaults(handler=cmd_register)

    for name, handler, text in [
        ("login", cmd_login, "log in by signing a server challenge"),
        ("logout", cmd_logout, "end this session"),
        ("whoami", cmd_whoami, "show the logged-in user"),
    ]:
        sub.add_parser(name, help=text, parents=[common]).set_defaults(handler=handler)

    dev = sub.add_parser("devices", help="list (or remove) your devices", parents=[common])
    dev.add_argument("action", nargs="?", choices=["list", "remove"], default="list")
    dev.add_argument("device_id", nargs="?")
    dev.set_defaults(handler=cmd_devices)

    keys = sub.add_parser("keys", help="your keys", parents=[common])
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_show = keys_sub.add_parser("show", help="master key, fingerprint and device keys", parents=[common])
    keys_show.add_argument("user", nargs="?", metavar="@USER", help="a contact's keys instead of yours")
    keys_show.set_defaults(handler=cmd_keys_show)
    _add_keys_accept(keys_sub, common)

    admin = sub.add_parser("admin", help="organisation administration", parents=[common])
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    invite = admin_sub.add_parser("invite", help="invites", parents=[common])
    invite_sub = invite.add_subparsers(dest="invite_command", required=True)
    create = invite_sub.add_parser("create", help="create a one-time invite", parents=[common])
    create.add_argument("--expires", default="7d", help="lifetime, e.g. 7d, 12h (default 7d)")
    create.set_defaults(handler=cmd_invite_create)
    sub.add_parser("rooms", help="list your rooms", parents=[common]).set_defaults(handler=cmd_rooms)
    room = sub.add_parser("room", help="create and manage rooms", parents=[common])
    room_sub = room.add_subparsers(dest="room_command", required=True)
    rc = room_sub.add_parser("create", help="create a group room", parents=[common])
    rc.add_argument("name")
    rc.add_argument("--invite", nargs="*", metavar="@USER")
    for name, text in [("invite", "invite people"), ("remove", "remove people (room admins)")]:
        p = room_sub.add_parser(name, help=text, parents=[common])
        p.add_argument("room")
        p.add_argument("users", nargs="+", metavar="@USER")
    for name, text in [("join", "accept an invitation"), ("leave", "leave a room"), ("members", "list members")]:
        room_sub.add_parser(name, help=text, parents=[common]).add_argument("room")
    rn = room_sub.add_parser("rename", help="rename a room (room admins)", parents=[common])
    rn.add_argument("room")
    rn.add_argument("name")
    room.set_defaults(handler=cmd_room)

    send = sub.add_parser("send", help="send a message: TARGET is @user, a room name or a room id", parents=[common])
    send.add_argument("target")
    send.add_argument("text")
    send.set_defaults(handler=cmd_send)
    sf = sub.add_parser("send-file", help="send an encrypted file", parents=[common])
    sf.add_argument("target")
    sf.add_argument("path")
    sf.set_defaults(handler=cmd_send_file)
    dl = sub.add_parser("download", help="download and decrypt a file from a message", parents=[common])
    dl.add_argument("event")
    dl.add_argument("--out", required=True)
    dl.set_defaults(handler=cmd_download)
    rd = sub.add_parser("read", help="sync, then show a room's latest messages", parents=[common])
    rd.add_argument("target")
    rd.add_argument("--limit", type=int, default=20)
    rd.set_defaults(handler=cmd_read)
    sub.add_parser("listen", help="stream incoming messages until interrupted", parents=[common]).set_defaults(handler=cmd_listen)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tokenim` command."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from tokenim.server.run import serve

        flags = {
            k: getattr(args, k) for k in ("data_dir", "host", "port", "database", "registration", "server_name", "log_level")
        }
        return serve(config_file=args.config, flags=flags)
    args.json = getattr(args, "json", False)
    args.profile = getattr(args, "profile", None) or default_profile()
    args.passphrase_file = getattr(args, "passphrase_file", None)
    try:
        result = asyncio.run(args.handler(args))
    except TokenIMError as err:
        if args.json:
            print(json.dumps(err.to_json()))
        else:
            print(f"tokenim: {err.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if result is not None:
        if args.json and args.command == "read":
            print(json.dumps(result["messages"]))
        else:
            print(json.dumps(result) if args.json else _human(args.command, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
