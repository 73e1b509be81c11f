"""`tokenim keys …`: this account's master key, fingerprint and device keys."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from tokenim.cli.account import open_client
from tokenim.cli.output import clean, when
from tokenim.core.errors import ErrorCode, TokenIMError


async def cmd_keys_show(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "user", None):
        return await cmd_contact_keys(args)
    async with await open_client(args) as client:
        info = client.keys.info()
        return {
            "user_id": info.user_id,
            "master_key": info.master_key,
            "master_key_version": info.master_key_version,
            "fingerprint": info.fingerprint,
            "device_id": info.device_id,
            "device_keys": {"ed25519": info.device_ed25519, "curve25519": info.device_curve25519},
            "holds_current_master": client.keys.holds_current_master(),
        }


async def cmd_contact_keys(args: argparse.Namespace) -> dict[str, Any]:
    """`keys show @user`: their master key and fingerprint as the server shows it, against the pinned one."""
    async with await open_client(args) as client:
        return (await client.keys.contact(args.user)).to_json()


async def cmd_keys_accept(args: argparse.Namespace) -> dict[str, Any]:
    """`keys accept @user`: pin their new master key, only for the fingerprint compared with them."""
    async with await open_client(args) as client:
        expected = args.fingerprint
        if expected is None:
            shown = await client.keys.contact(args.user)
            if shown.status != "changed":
                return (await client.keys.accept(args.user, "")).to_json()  # raises: says there is nothing to accept
            if not sys.stdin.isatty():
                raise TokenIMError(
                    ErrorCode.INVALID_REQUEST,
                    f"Not at a terminal: pass --fingerprint with {clean(shown.user_id)}'s new fingerprint as they read it "
                    f"to you (see `tokenim keys show {clean(shown.user_id)}`).",
                )
            print(contact_keys_text(shown.to_json()))
            try:
                question = f"Accept the new key of {clean(shown.user_id)}? Only if they read you the same fingerprint [y/N]: "
                answer = await asyncio.to_thread(input, question)
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "Nothing was accepted.")
            expected = shown.current_fingerprint
        return (await client.keys.accept(args.user, expected)).to_json()


async def cmd_keys_rotate(args: argparse.Namespace) -> dict[str, Any]:
    """`keys rotate`: a new master key, signed over from the old one; contacts follow it without a warning."""
    async with await open_client(args) as client:
        return (await client.keys.rotate()).to_json()


def human_rotated(r: dict[str, Any]) -> str:
    pad = " " * 17
    n = len(r["devices"])
    return "\n".join(
        [
            f"Rotated your master key: version {r['old_version']} -> {r['new_version']} ({n} device{'s' if n != 1 else ''} "
            "re-signed). Your contacts follow the signed rotation without a warning.",
            "Old fingerprint: " + _fingerprint_rows(r["old_fingerprint"], pad),
            "New fingerprint: " + _fingerprint_rows(r["new_fingerprint"], pad),
        ]
    )


async def cmd_keys_status(args: argparse.Namespace) -> dict[str, Any]:
    """`keys status`: how old the keys are and when the master key is due for rotation."""
    async with await open_client(args) as client:
        return (await client.keys.status()).to_json()


def human_status(r: dict[str, Any]) -> str:
    due = r["due_in_days"]
    if r["outdated"]:
        when_due = "another of your devices rotated it since: this device no longer holds the current master key"
    elif due <= 0:
        when_due = f"due now (every {r['key_rotation_days']} days): run `tokenim keys rotate`"
    else:
        when_due = f"in {due} day{'s' if due != 1 else ''} (every {r['key_rotation_days']} days)"
    return "\n".join(
        [
            f"User:        {clean(r['user_id'])}",
            f"Master key:  version {r['master_key_version']}, made {when(r['master_created_at'])} "
            f"({_days(r['master_age_days'])} old)",
            "Fingerprint: " + _fingerprint_rows(r["master_fingerprint"], " " * 13),
            f"Rotation:    {when_due}",
            f"This device: {clean(r['device_id'])}, added {when(r['device_created_at'])} ({_days(r['device_age_days'])} old)",
        ]
    )


def _days(n: int) -> str:
    return f"{n} day{'s' if n != 1 else ''}"


def _fingerprint_rows(fp: str, indent: str) -> str:
    groups = clean(fp).split()
    return ("\n" + indent).join(" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4))


def contact_keys_text(r: dict[str, Any]) -> str:
    """A contact's keys: pinned or changed, fingerprints, devices."""
    user = clean(r["user_id"])
    status = {
        "trusted": "the pinned key: their devices get your messages",
        "pinned_now": "seen for the first time and pinned now: compare the fingerprint with them",
        "changed": "CHANGED: their devices get no messages until you compare the new fingerprint with them "
        f"and run `tokenim keys accept {user}`",
    }.get(r["status"], clean(r["status"]))
    if r["status"] == "changed" and "keys accept" not in r.get("message", "keys accept"):
        status = "CHANGED, and the server's keys for them do not verify: their devices get no messages"
    lines = [f"User:        {user}", f"Status:      {status}"]
    if r["status"] == "changed" and r.get("message"):
        lines.append(f"Problem:     {clean(r['message'])}")
    pad = " " * 13
    if r["status"] == "changed":
        lines.append("Pinned:      " + _fingerprint_rows(r["pinned_fingerprint"], pad))
        new = _fingerprint_rows(r["current_fingerprint"], pad) if r["current_fingerprint"] else "(does not verify)"
        lines.append("New key:     " + new)
    else:
        lines.append("Fingerprint: " + _fingerprint_rows(r["current_fingerprint"], pad))
    lines.append(f"Master key:  {clean(r['current_master'])}")
    for d in r["devices"]:
        key = f"  ed25519 {clean(d['ed25519'])}" if d.get("ed25519") else ""
        lines.append(f"Device:      {clean(d['device_id'])}{key}  ({clean(d['status'])})")
    return "\n".join(lines)


def key_accepted_text(r: dict[str, Any]) -> str:
    pad = " " * 17
    return "\n".join(
        [
            f"Accepted the new master key of {clean(r['user_id'])}; their devices get your messages again.",
            "Old fingerprint: " + _fingerprint_rows(r["old_fingerprint"], pad),
            "New fingerprint: " + _fingerprint_rows(r["new_fingerprint"], pad),
        ]
    )


def human_keys(r: dict[str, Any]) -> str:
    if "new_fingerprint" in r:
        return key_accepted_text(r)
    if "current_fingerprint" in r:
        return contact_keys_text(r)
    fp = r["fingerprint"].split()
    rows = [" ".join(fp[i : i + 4]) for i in range(0, len(fp), 4)]
    return "\n".join(
        [
            f"User:        {clean(r['user_id'])}",
            f"Master key:  {clean(r['master_key'])} (version {r['master_key_version']})",
            "Fingerprint: " + ("\n             ".join(rows)),
            f"Device:      {clean(r['device_id'])}",
            f"  ed25519:     {clean(r['device_keys']['ed25519'])}",
            f"  curve25519:  {clean(r['device_keys']['curve25519'])}",
        ]
        + (
            []
            if r.get("holds_current_master", True)
            else ["Another of your devices rotated your master key since: this device no longer holds the current one."]
        )
    )


__all__ = [
    "cmd_contact_keys",
    "cmd_keys_accept",
    "cmd_keys_rotate",
    "cmd_keys_show",
    "cmd_keys_status",
    "contact_keys_text",
    "human_keys",
    "human_rotated",
    "human_status",
    "key_accepted_text",
]
