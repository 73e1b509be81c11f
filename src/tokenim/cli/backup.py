"""`tokenim backup create|restore|status`: the encrypted backup of this account's room keys on the server."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from tokenim.cli.account import open_client
from tokenim.cli.output import clean, when
from tokenim.cli.prompt import ask, check_strength
from tokenim.core.errors import ErrorCode, TokenIMError

RECOVERY_KEY_ENV = "TOKENIM_RECOVERY_KEY"
RECOVERY_PASSPHRASE_ENV = "TOKENIM_RECOVERY_PASSPHRASE"


RECOVERY_PURPOSE = "It is all that protects your backup on the server: whoever holds the backup can try guesses."


def _recovery_passphrase(*, new: bool) -> str:
    """From TOKENIM_RECOVERY_PASSPHRASE, else a hidden prompt (twice, and checked for strength, when new)."""
    text = os.environ.get(RECOVERY_PASSPHRASE_ENV)
    at_prompt = not text
    if at_prompt:
        if not sys.stdin.isatty():
            raise TokenIMError(
                ErrorCode.BAD_CONFIG, f"No recovery passphrase: set {RECOVERY_PASSPHRASE_ENV} when not at a terminal."
            )
        text = ask("New recovery passphrase: " if new else "Recovery passphrase: ")
    if not text:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "No recovery passphrase was given.")
    if new:
        check_strength(text, ["tokenim", "backup", "recovery"], RECOVERY_PURPOSE)
        if at_prompt and ask("Repeat the recovery passphrase: ") != text:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "The two passphrases differ.")
    return text


def _recovery_key() -> str:
    """From TOKENIM_RECOVERY_KEY, else a hidden prompt."""
    text = os.environ.get(RECOVERY_KEY_ENV)
    if not text:
        if not sys.stdin.isatty():
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"No recovery key: set {RECOVERY_KEY_ENV} when not at a terminal.")
        text = ask("Recovery key: ")
    if not text.strip():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "No recovery key was given.")
    return text


async def cmd_backup_create(args: argparse.Namespace) -> dict[str, Any]:
    passphrase = _recovery_passphrase(new=True) if args.recovery_passphrase else None
    async with await open_client(args) as client:
        return (await client.backup.create(passphrase, replace=args.replace)).to_json()


async def cmd_backup_restore(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        status = await client.backup.status()  # what the backup is opened with decides what to ask for
        if not status.exists:
            raise TokenIMError(ErrorCode.NO_BACKUP, "There is no key backup to restore: `tokenim backup create` makes one.")
        if status.passphrase and not args.recovery_passphrase:
            raise TokenIMError(
                ErrorCode.WRONG_RECOVERY_KEY,
                "This backup was made with a recovery passphrase, not a recovery key: run `tokenim backup restore --passphrase`.",
            )
        if args.recovery_passphrase and not status.passphrase:
            raise TokenIMError(
                ErrorCode.WRONG_RECOVERY_KEY, "This backup was made with a recovery key, not a passphrase: give the key."
            )
        if args.recovery_passphrase:
            secret = {"passphrase": _recovery_passphrase(new=False)}
        else:
            secret = {"recovery_key": _recovery_key()}
        return (await client.backup.restore(**secret)).to_json()


async def cmd_backup_status(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        return (await client.backup.status()).to_json()


def human_created(r: dict[str, Any]) -> str:
    keys = f"Backed up {r['keys']} room key{'s' if r['keys'] != 1 else ''} (backup version {r['version']})."
    if r.get("pending"):
        keys += f" {r['pending']} more could not be uploaded now: they go up after your next send or read."
    if r["recovery_key"] is None:
        return f"{keys}\nRestore it on a new device with `tokenim backup restore --passphrase` and your recovery passphrase."
    return (
        f"{keys}\n\nYour recovery key (shown only this once; write it down and keep it apart from this device):\n\n"
        f"    {clean(r['recovery_key'])}\n\n"
        "Anyone with it can read your backed-up messages. `tokenim backup restore` on a new device asks for it."
    )


def human_restored(r: dict[str, Any]) -> str:
    if r["imported"] == 0:
        return (
            f"Backup version {r['version']} holds {r['keys']} room key{'s' if r['keys'] != 1 else ''}: this device "
            "already had all of them, so nothing new was restored. It backs up its new keys too."
        )
    return (
        f"Restored {r['imported']} new room key{'s' if r['imported'] != 1 else ''} of {r['keys']} in backup version "
        f"{r['version']}: older messages can now be read here, and this device backs up its new keys too."
    )


def human_status(r: dict[str, Any]) -> str:
    if not r["exists"]:
        return "There is no key backup: `tokenim backup create` makes one."
    last = f", last uploaded {when(r['last_uploaded_at'])}" if r["last_uploaded_at"] else ""
    how = "a recovery passphrase" if r["passphrase"] else "a recovery key"
    lines = [f"Key backup version {r['version']}: {r['keys']} room keys{last}; opened with {how}."]
    if r["backs_up"]:
        waiting = f" ({r['pending']} waiting to be uploaded)" if r["pending"] else ""
        lines.append(f"This device backs up its new room keys{waiting}.")
    else:
        lines.append("This device does not back up its keys to this version: `tokenim backup restore` makes it do so.")
    return "\n".join(lines)
