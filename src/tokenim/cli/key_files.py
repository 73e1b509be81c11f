"""`tokenim keys export | import | export-room-keys | import-room-keys`: keys to and from encrypted files.

The file's passphrase comes from TOKENIM_EXPORT_PASSPHRASE, else a hidden prompt (twice, and checked for
strength, when a file is made). It is not the profile's passphrase: the file may travel.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tokenim.cli.account import check_server_url, open_client
from tokenim.cli.output import clean
from tokenim.cli.prompt import ask, check_strength, otp_source
from tokenim.client import Client
from tokenim.client.key_files import check_new_file, read_key_file
from tokenim.core.clock import SystemClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.signing import fingerprint

ENV = "TOKENIM_EXPORT_PASSPHRASE"


FILE_PURPOSE = "It is all that protects the key file wherever the file travels: anyone who gets the file can try guesses."


def file_passphrase(*, new: bool, user_inputs: list[str]) -> str:
    """The key file's passphrase: the environment, else asked at a terminal (twice and checked for a new file)."""
    text = os.environ.get(ENV)
    if text is None:
        if not sys.stdin.isatty():
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"No key file passphrase: set {ENV} when not at a terminal.")
        text = ask("New passphrase for the key file: " if new else "Key file passphrase: ")
        if new and text:
            check_strength(text, user_inputs, FILE_PURPOSE)
            if ask("Repeat the key file passphrase: ") != text:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "The two passphrases differ: nothing was written.")
    if not text:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "No key file passphrase was given.")
    if new:
        check_strength(text, user_inputs, FILE_PURPOSE)
    return text


def check_readable(path: Path) -> None:
    """Refuse a key file that is missing or not a file before any passphrase is asked for."""
    if path.is_dir():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{path} is a folder, not a key file: nothing was imported.")
    if not path.exists():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"There is no file {path}: nothing was imported.")
    if not path.is_file():
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"{path} is not a regular file (a pipe or a device?): nothing was imported."
        )


async def cmd_export_master(args: argparse.Namespace) -> dict[str, Any]:
    """`keys export --out FILE`: the master private key as encrypted PKCS#8 PEM."""
    out = Path(args.out)
    check_new_file(out)
    async with await open_client(args) as client:
        await client.keys.require_current_master("export it (the file would hold the old, rotated key)")  # before asking
        passphrase = file_passphrase(new=True, user_inputs=[client.user_id, "tokenim"])
        await client.key_files.export_master_key(out, passphrase)
        info = client.keys.info()
        return {"exported": "master_key", "file": str(out), "master_key": info.master_key, "fingerprint": info.fingerprint}


def human_export_master(r: dict[str, Any]) -> str:
    return (
        f"Wrote your master key to {clean(r['file'])} (encrypted; only you can read the file).\n"
        f"Fingerprint: {r['fingerprint']}\n"
        "Whoever has this file and its passphrase can add devices to your account: keep it offline."
    )


async def cmd_import_master(args: argparse.Namespace) -> dict[str, Any]:
    """`--profile NEW keys import FILE --server URL --username NAME`: a new device from an exported master key."""
    check_server_url(args.server)
    data = read_key_file(Path(args.file))
    passphrase = file_passphrase(new=False, user_inputs=[])
    async with await Client.import_master_key(
        args.profile,
        args.passphrase,
        key_file=data,
        key_passphrase=passphrase,
        server_url=args.server,
        username=args.username,
        clock=SystemClock(),
        otp=otp_source(args),
    ) as client:
        info = client.keys.info()
        return {
            "user_id": client.user_id,
            "device_id": client.device_id,
            "master_key": info.master_key,
            "master_key_version": info.master_key_version,
            "fingerprint": fingerprint(info.master_key),
        }


def human_import_master(r: dict[str, Any]) -> str:
    return (
        f"Imported your master key (version {r['master_key_version']}): this is a new device "
        f"{clean(r['device_id'])} of your account {clean(r['user_id'])}, logged in.\nFingerprint: {r['fingerprint']}"
    )


async def cmd_export_room_keys(args: argparse.Namespace) -> dict[str, Any]:
    """`keys export-room-keys --out FILE`: every room key this device holds, Matrix key export format."""
    out = Path(args.out)
    check_new_file(out)
    async with await open_client(args) as client:
        passphrase = file_passphrase(new=True, user_inputs=[client.user_id, "tokenim"])
        count = await client.key_files.export_room_keys(out, passphrase)
        return {"exported": "room_keys", "file": str(out), "sessions": count}


def human_export_room_keys(r: dict[str, Any]) -> str:
    return (
        f"Wrote {r['sessions']} room key(s) to {clean(r['file'])} (encrypted; only you can read the file).\n"
        "Whoever has this file and its passphrase can read those conversations: keep it safe."
    )


async def cmd_import_room_keys(args: argparse.Namespace) -> dict[str, Any]:
    """`keys import-room-keys FILE`: room keys from an export file, so older messages can be read here."""
    check_readable(Path(args.file))
    async with await open_client(args) as client:
        passphrase = file_passphrase(new=False, user_inputs=[])
        counts = await client.key_files.import_room_keys(Path(args.file), passphrase)
        return {"imported": counts.imported, "already_held": counts.already_held, "unusable": counts.unusable}


def human_import_room_keys(r: dict[str, Any]) -> str:
    text = f"Imported {r['imported']} room key(s); {r['already_held']} were here already"
    text += f"; {r['unusable']} could not be used." if r["unusable"] else "."
    return text + ("\nMessages read with imported keys show as not verified until their sender's device shares the key again.")


__all__ = [
    "check_readable",
    "cmd_export_master",
    "cmd_export_room_keys",
    "cmd_import_master",
    "cmd_import_room_keys",
    "file_passphrase",
    "human_export_master",
    "human_export_room_keys",
    "human_import_master",
    "human_import_room_keys",
]
