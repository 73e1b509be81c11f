"""`tokenim 2fa enable | confirm | status | disable`. Where every command finds a two-factor code when the
server asks for one (`--otp CODE`, else `TOKENIM_OTP`, else a prompt at a terminal) is `prompt.otp_source`."""

from __future__ import annotations

import argparse
import io
from typing import Any

import segno

from tokenim.cli.account import open_client
from tokenim.cli.output import clean, when


def qr_text(uri: str) -> str:
    """The otpauth:// URI as a QR code drawn with Unicode block characters, for the app to scan."""
    out = io.StringIO()
    segno.make(uri, error="m").terminal(out=out, compact=True)
    return out.getvalue().rstrip("\n")


async def cmd_two_factor(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        action = args.two_factor_command
        if action == "enable":
            setup = await client.two_factor.enable()
            return {"secret": setup.secret, "uri": setup.uri, "digits": setup.digits, "period": setup.period}
        if action == "confirm":
            codes = await client.two_factor.confirm(args.code)
            return {"enabled": True, "recovery_codes": codes}
        if action == "disable":
            await client.two_factor.disable(recovery_code=args.recovery_code)
            return {"enabled": False}
        return (await client.two_factor.status()).model_dump()


def human_two_factor(r: dict[str, Any], args: argparse.Namespace) -> str:
    action = args.two_factor_command
    if action == "enable":
        secret = " ".join(r["secret"][i : i + 4] for i in range(0, len(r["secret"]), 4))
        print("Scan this QR code with your authenticator app:", flush=True)
        print(qr_text(r["uri"]), flush=True)
        return (
            f"Or type the secret by hand: {clean(secret)} (TOTP, {r['digits']} digits, every {r['period']} seconds)\n"
            f"URI: {clean(r['uri'])}\n"
            "Two-factor authentication is not on yet: turn it on with the code the app shows now, "
            "`tokenim 2fa confirm CODE`."
        )
    if action == "confirm":
        codes = "\n".join(f"    {clean(c)}" for c in r["recovery_codes"])
        return (
            "Two-factor authentication is on: adding, linking, removing or revoking a device, rotating or importing "
            "your master key, creating, restoring or deleting a backup and admin actions now ask for a code.\n"
            "Recovery codes (each works once, for when the authenticator is lost; they are shown only now, keep "
            f"them somewhere safe):\n{codes}"
        )
    if action == "disable":
        return "Two-factor authentication is off."
    return human_status(r)


def human_status(r: dict[str, Any]) -> str:
    if not r["enabled"]:
        waiting = " (a setup waits for its code: `tokenim 2fa confirm CODE`)" if r["pending"] else ""
        return f"Two-factor authentication: off{waiting}."
    left = r["recovery_codes_left"]
    text = f"Two-factor authentication: on since {when(r['enabled_at'])}; {left} recovery code{'s' if left != 1 else ''} left."
    if r["locked_until"]:
        text += f"\nLocked after too many wrong codes until {when(r['locked_until'])}."
    return text


def add_parser(sub: Any, common: argparse.ArgumentParser, make: Any) -> None:
    """`tokenim 2fa ACTION` (make: main's `_sub`, which adds the common options and the handler)."""
    two = make(sub, "2fa", "two-factor authentication with an authenticator app (TOTP)", common, None, None)
    actions = two.add_subparsers(dest="two_factor_command", required=True, metavar="ACTION")
    human = human_two_factor
    make(actions, "enable", "start: show the secret as a QR code for your app", common, cmd_two_factor, human)
    text = "turn it on with the code the app shows; prints recovery codes"
    make(actions, "confirm", text, common, cmd_two_factor, human).add_argument(
        "code", help="the 6 digits the authenticator app shows now"
    )
    make(actions, "status", "whether it is on, recovery codes left", common, cmd_two_factor, human)
    disable = make(actions, "disable", "turn it off (needs a code, or a recovery code)", common, cmd_two_factor, human)
    disable.add_argument(
        "--recovery-code", help="one of your recovery codes, when the authenticator is lost (default: a current code)"
    )


__all__ = ["add_parser", "cmd_two_factor", "human_two_factor"]
