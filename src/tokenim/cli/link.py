"""`tokenim devices link` (on the new device) and `tokenim devices approve CODE` (on a device holding the master
key): linking a new device without copying files. docs/cli.md describes them."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import segno

from tokenim.cli.output import clean, emit, emit_json, when
from tokenim.cli.prompt import otp_source
from tokenim.client import Client, LinkInvitation
from tokenim.core.clock import SystemClock
from tokenim.core.errors import ErrorCode, TokenIMError

Handler = Callable[[argparse.Namespace], Awaitable[Any]]
Human = Callable[[dict[str, Any], argparse.Namespace], str]
LINK_ACTIONS = ("link", "approve")


def qr_text(code: str) -> str:
    """The code as a QR code drawn with Unicode block characters (scannable from the terminal)."""
    out = io.StringIO()
    segno.make(code, error="m").terminal(out=out, compact=True)
    return out.getvalue().rstrip("\n")


def show_invitation(invitation: LinkInvitation, *, as_json: bool) -> None:
    """What the new device prints while it waits: the code (and a QR code of it), and until when it works."""
    if as_json:
        emit_json({"code": invitation.code, "user_id": invitation.user_id, "expires_at": invitation.expires_at})
        return
    emit(
        f"To add this device to {clean(invitation.user_id)}, run this on a device that holds your master key:\n\n"
        f"    tokenim devices approve {invitation.code}\n\n"
        f"The code works once, until {when(invitation.expires_at)}. Waiting for approval (Ctrl-C stops)…"
    )
    print(qr_text(invitation.code), file=sys.stdout, flush=True)


def check_link_args(args: argparse.Namespace) -> None:
    """Before the passphrase is asked: `devices link` needs --server and --username, and nothing else."""
    if args.device_id:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "`tokenim devices link` takes no argument besides --server and --username.")
    if not args.server or not args.username:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "Say where and who: tokenim devices link --server URL --username NAME.")


async def cmd_link(args: argparse.Namespace) -> dict[str, Any]:
    async with await Client.link(
        args.profile,
        args.passphrase,
        server_url=args.server,
        username=args.username,
        clock=SystemClock(),
        on_code=lambda invitation: show_invitation(invitation, as_json=args.json),
    ) as client:
        info = client.keys.info()
        return {"linked": True, "user_id": client.user_id, "device_id": client.device_id, "fingerprint": info.fingerprint}


def human_link(r: dict[str, Any]) -> str:
    return (
        f"Linked: this is now device {clean(r['device_id'])} of {clean(r['user_id'])}, logged in.\n"
        f"Your key fingerprint: {r['fingerprint']}"
    )


async def cmd_approve(args: argparse.Namespace) -> dict[str, Any]:
    if not args.device_id:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "Say which code: tokenim devices approve CODE (shown on the new device).")
    async with await Client.open(args.profile, args.passphrase, clock=SystemClock()) as client:
        client.two_factor.use_codes(otp_source(args))  # the new device is added with POST /v1/devices
        approval = await client.linking.approve(args.device_id)
        return {"approved": approval.device_id, "master_key_sent": approval.master_key_sent, "room_keys": approval.room_keys}


def human_approve(r: dict[str, Any]) -> str:
    what = "your master key and " if r["master_key_sent"] else ""
    keys = r["room_keys"]
    return f"Approved device {clean(r['approved'])}: it received {what}{keys} room key{'s' if keys != 1 else ''}."


def devices_handler(other: Handler) -> Handler:
    """`tokenim devices ACTION`: link and approve here, the other actions as before."""

    async def handler(args: argparse.Namespace) -> Any:
        if args.action == "link":
            return await cmd_link(args)
        if args.action == "approve":
            return await cmd_approve(args)
        return await other(args)

    return handler


def devices_human(other: Human) -> Human:
    def human(r: dict[str, Any], args: argparse.Namespace) -> str:
        if args.action == "link":
            return human_link(r)
        if args.action == "approve":
            return human_approve(r)
        return other(r, args)

    return human
