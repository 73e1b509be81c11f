"""`tokenim chat`: the terminal app (tokenim.tui), on this profile; `--serve` puts it in a local browser.

Textual is imported only here, when the app starts, so other commands stay quick."""

from __future__ import annotations

import argparse

from tokenim.cli.account import rotation_notice
from tokenim.client import Client, ProfileStore
from tokenim.core.clock import SystemClock
from tokenim.core.errors import ErrorCode, TokenIMError


def check_profile(args: argparse.Namespace) -> None:
    if not ProfileStore.exists(args.profile):
        raise TokenIMError(ErrorCode.PROFILE_MISSING, f"There is no profile in {args.profile}: register first.")


async def cmd_chat(args: argparse.Namespace) -> None:
    """Open the profile once and run the app until ctrl+q."""
    from tokenim.tui import ChatApp, NotifyMode

    check_profile(args)
    mode = NotifyMode(args.notify)
    if args.in_browser:  # started by --serve for one page: the passphrase is asked in the page

        async def opener(passphrase: str) -> Client:
            return await Client.open(args.profile, passphrase, clock=SystemClock())

        app = ChatApp(opener=opener, profile=str(args.profile), notify=mode)
        try:
            await app.run_async()
        finally:
            if app.client is not None:
                await app.client.close()
        app.raise_crash()
        return
    async with await Client.open(args.profile, args.passphrase, clock=SystemClock()) as client:
        app = ChatApp(client, notify=mode, notice=rotation_notice(client))
        await app.run_async()
        app.raise_crash()


def serve_chat(args: argparse.Namespace) -> int:
    """`tokenim chat --serve`: no passphrase here; each page asks for it."""
    from tokenim.tui.serve import serve

    check_profile(args)
    if not 1 <= args.port <= 65535:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "--port is a port number from 1 to 65535.")
    return serve(args.profile, args.port, args.notify)


__all__ = ["cmd_chat", "serve_chat"]
