"""Account commands: register, login, logout, whoami, devices, admin invites."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import httpx

from tokenim.cli.output import clean, duration, emit, when
from tokenim.cli.prompt import otp_source
from tokenim.client import Client
from tokenim.core.clock import SystemClock
from tokenim.core.errors import ErrorCode, TokenIMError

MIN_INVITE_S, MAX_INVITE_S = 60, 365 * 86400
BAD_URL = "The server URL must look like http://host:port, for example http://127.0.0.1:8470."


def check_server_url(url: str) -> None:
    """Refuse, in one sentence, a server URL that names no http(s) host or has an impossible port."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError):
        raise TokenIMError(ErrorCode.BAD_CONFIG, BAD_URL) from None
    if parsed.scheme not in ("http", "https") or not parsed.host or (port is not None and not 0 < port < 65536):
        raise TokenIMError(ErrorCode.BAD_CONFIG, BAD_URL)


async def open_client(args: argparse.Namespace) -> Client:
    """Unlock the profile with the passphrase read before the event loop started. While the master key is due
    for rotation, say so on stderr (never on stdout: --json output stays one object)."""
    client = await Client.open(args.profile, args.passphrase, clock=SystemClock())
    client.two_factor.use_codes(otp_source(args))
    if getattr(args, "keys_command", None) != "rotate":
        notice = rotation_notice(client)
        if notice is not None:
            emit(notice, sys.stderr)
    return client


def rotation_notice(client: Client) -> str | None:
    """The line every command prints on stderr while the master key is due for rotation (None: not due)."""
    due = client.keys.rotation_due()
    if due is None:
        return None
    days = due.master_age_days
    return f"tokenim: your master key is {days} day{'s' if days != 1 else ''} old: run `tokenim keys rotate`"


def parse_duration(text: str) -> int:
    """'7d', '12h', '30m' or '90s' to seconds."""
    m = re.fullmatch(r"(\d{1,9})\s*([dhms])", text.strip().lower())
    if not m:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"'{text}' is not a duration: use forms like 7d, 12h, 30m.")
    return int(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m.group(2)]


async def cmd_register(args: argparse.Namespace) -> dict[str, Any]:
    async with await Client.register(
        args.profile,
        args.passphrase,
        server_url=args.server,
        username=args.username,
        email=args.email,
        invite=args.invite,
        clock=SystemClock(),
    ) as client:
        return {**(await client.account.whoami()).model_dump(), "fingerprint": client.keys.info().fingerprint}


def human_register(r: dict[str, Any]) -> str:
    admin = " (organisation admin)" if r["is_admin"] else ""
    return f"Registered {clean(r['user_id'])}{admin}, device {clean(r['device_id'])}.\nYour key fingerprint: {r['fingerprint']}"


async def cmd_login(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        await client.account.login()
        return {**(await client.account.whoami()).model_dump(), "logged_in": True}


def human_login(r: dict[str, Any]) -> str:
    return f"Logged in as {clean(r['user_id'])} on device {clean(r['device_id'])}."


async def cmd_logout(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        try:
            ended = await client.account.logout(everywhere=args.all)
        except TokenIMError as err:
            if err.code in (ErrorCode.NOT_LOGGED_IN, ErrorCode.DEVICE_REVOKED):
                raise
            raise TokenIMError(
                err.code,
                f"{err.message.rstrip('.')}. You are still logged in: the server still honours this session, "
                "so it was kept here too. Try again when the server can be reached.",
                details=err.details,
            ) from None
        return {"logged_out": True, "all": args.all, "sessions_ended": ended}


def human_logout(r: dict[str, Any]) -> str:
    if r["all"]:
        n = r["sessions_ended"]
        return f"Logged out everywhere: {n} session{'s' if n != 1 else ''} ended on the server."
    if r["sessions_ended"] == 0:
        return "Logged out (the server had already ended this session)."
    return "Logged out."


async def cmd_whoami(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        return (await client.account.whoami()).model_dump()


def human_whoami(r: dict[str, Any]) -> str:
    admin = ", admin" if r["is_admin"] else ""
    return f"{clean(r['user_id'])} (device {clean(r['device_id'])}{admin})"


async def cmd_devices(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        if args.action in ("remove", "revoke"):
            if not args.device_id:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Say which device: tokenim devices {args.action} DEVICE_ID.")
            if args.device_id == client.device_id:
                raise TokenIMError(
                    ErrorCode.INVALID_REQUEST,
                    f"{args.device_id} is this device: removing it would end this profile's access, and a removed "
                    "device can never log in again. Remove it from another of your devices, or use `tokenim logout` "
                    "to end this session only.",
                )
            return await _remove_device(
                client, args.device_id, revoke_only=args.action == "revoke", force=getattr(args, "force", False)
            )
        elif args.device_id:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "`tokenim devices list` takes no device id.")
        devices = await client.devices.all()
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


async def _remove_device(client: Client, device_id: str, *, revoke_only: bool, force: bool = False) -> dict[str, Any]:
    """Revoke the device (signed by the master key: refused for good, by the server and by every contact). `remove`
    on a device that no longer holds the current master key refuses unless `force` (it could remove the only device
    holding the current key), then removes it only, and says so."""
    try:
        await client.keys.revoke(device_id)
        return {"removed": device_id, "revoked": True}
    except TokenIMError as err:
        if revoke_only or err.code is not ErrorCode.KEY_CHAIN_INVALID or client.keys.holds_current_master():
            raise
        if not force:
            raise TokenIMError(
                err.code,
                f"{err.message} Removing {clean(device_id)} from here could remove the only device that holds your "
                "current master key: your account could then never add, revoke or rotate again. If you are sure "
                f"it does not hold it, run `tokenim devices remove {clean(device_id)} --force`.",
            ) from None
    await client.devices.remove(device_id, force=True)
    return {"removed": device_id, "revoked": False}


def human_devices(r: dict[str, Any]) -> str:
    if "removed" in r:
        if r.get("revoked"):
            return (
                f"Revoked device {clean(r['removed'])}: it can never log in again, and your contacts stop encrypting "
                "to it (rooms it was in get a new key before the next message)."
            )
        return (
            f"Removed device {clean(r['removed'])}. It was not revoked: another of your devices rotated your master "
            "key, and only a device holding the current master key can revoke; run `tokenim devices revoke "
            f"{clean(r['removed'])}` there to refuse its keys for good."
        )
    lines = []
    for d in r["devices"]:
        mark = "*" if d["current"] else " "
        seen = f", last seen {when(d['last_seen_at'])}" if d["last_seen_at"] else ""
        lines.append(
            f"{mark} {clean(d['device_id'])}  added {when(d['created_at'])}{seen}\n    ed25519 {clean(d['ed25519'] or '-')}"
        )
    return "\n".join(lines) + "\n(* this device)"


async def cmd_invite_create(args: argparse.Namespace) -> dict[str, Any]:
    seconds = parse_duration(args.expires)
    if not MIN_INVITE_S <= seconds <= MAX_INVITE_S:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"An invite lasts between 1 minute and 365 days, not {duration(seconds)}.")
    async with await open_client(args) as client:
        invite = await client.admin.create_invite(seconds)
        return {"code": invite.code, "expires_at": invite.expires_at}


def human_invite(r: dict[str, Any]) -> str:
    return f"Invite code: {clean(r['code'])}\n(one use; valid until {when(r['expires_at'])})"


__all__ = [
    "cmd_devices",
    "cmd_invite_create",
    "cmd_login",
    "cmd_logout",
    "cmd_register",
    "cmd_whoami",
    "open_client",
    "parse_duration",
]
