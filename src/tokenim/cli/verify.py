"""`tokenim fingerprint @user` (the safety number, and marking someone verified by it) and `tokenim verify
@user` (interactive SAS: both people run it, compare the emoji and answer)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from tokenim.cli.account import open_client
from tokenim.cli.output import clean, emit, emit_json
from tokenim.client import SasShown
from tokenim.core.errors import ErrorCode, TokenIMError

MAX_ANSWER_BYTES = 1024


async def cmd_fingerprint(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        if not args.mark_verified:
            if args.number is not None:
                raise TokenIMError(
                    ErrorCode.INVALID_REQUEST,
                    "--number is the number they read you, for --mark-verified: add --mark-verified, or leave it out.",
                )
            return (await client.verification.safety_number(args.user)).to_json()
        number = args.number
        if number is None:
            shown = await client.verification.safety_number(args.user)
            if not sys.stdin.isatty():
                raise TokenIMError(
                    ErrorCode.INVALID_REQUEST,
                    f"Not at a terminal: pass --number with the safety number {clean(shown.user_id)} read to you.",
                )
            emit(safety_number_text(shown.to_json()))
            question = f"Did {clean(shown.user_id)} read you exactly this number? [y/N]: "
            if (await read_answer(question)).lower() not in ("y", "yes"):
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "Nothing was marked verified.")
            number = shown.safety_number
        return (await client.verification.mark_verified(args.user, number)).to_json()


def _rows(number: str, indent: str) -> str:
    groups = clean(number).split()
    return "\n".join(indent + " ".join(groups[i : i + 4]) for i in range(0, len(groups), 4))


def safety_number_text(r: dict[str, Any]) -> str:
    """The safety number in three rows, whether the person is verified, and a changed key if the server shows one."""
    user = clean(r["user_id"])
    lines = [f"Safety number with {user} (compare it with them: in person, or on a call):", _rows(r["safety_number"], "    ")]
    if r["verified"]:
        how = {"sas": "by comparing emoji (SAS)", "safety_number": "by the safety number"}.get(r["verified_by"], "")
        lines.append(f"Verified: yes, {how}.")
    else:
        lines.append(f"Verified: no: {clean(r['why_not'] or '')}.")
    if not r["verified"] and not r["key_changed"]:
        lines.append(
            f"Once they have read you the same number, run `tokenim fingerprint {user} --mark-verified` (or compare "
            f"emoji with `tokenim verify {user}`)."
        )
    if r["key_changed"]:
        lines += [
            f"Warning: the server now shows another master key for {user} than the one pinned here; with it, "
            "the number would be:",
            _rows(r["current_safety_number"] or "", "    "),
            f"Compare with them, then `tokenim keys accept {user}` and verify again.",
        ]
    return "\n".join(lines)


def sas_text(shown: SasShown) -> str:
    emoji = "   ".join(f"{e['emoji']}  {e['name']}" for e in shown.emoji)
    numbers = " ".join(str(d) for d in shown.decimals)
    return (
        f"Compare with {clean(shown.user_id)} (device {clean(shown.device_id)}): they must see the same emoji.\n"
        f"    {emoji}\n    (or the numbers {numbers})"
    )


class InputEnded(TokenIMError):
    """Standard input ended before an answer: nobody is there to answer, which is not a "no"."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.CANCELLED, "Cancelled: the input ended before an answer was given.")


async def read_answer(question: str) -> str:
    """One line from standard input without a thread (so a cancelled question does not keep the command alive).
    Raises `InputEnded` when the input ends before a line does."""
    if question:
        print(clean(question), end="", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    got = bytearray()
    done: asyncio.Future[None] = loop.create_future()
    ended = False

    def readable() -> None:
        nonlocal ended
        chunk = os.read(fd, 1)
        ended = ended or not chunk
        if not chunk or chunk == b"\n" or len(got) > MAX_ANSWER_BYTES:
            if not done.done():
                done.set_result(None)
            return
        got.extend(chunk)

    try:
        loop.add_reader(fd, readable)
    except (OSError, ValueError):  # a regular file (`< answers.txt`) can't be watched, and never blocks
        line = sys.stdin.readline(MAX_ANSWER_BYTES)
        if not line:
            raise InputEnded() from None
        return line.strip()
    try:
        await done
    finally:
        loop.remove_reader(fd)
    if ended and not got:
        raise InputEnded()
    return got.decode("utf-8", "replace").strip()


async def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:

        async def confirm(shown: SasShown) -> bool:
            if args.json:
                emit_json({"sas": shown.to_json()})
                answer = await read_answer("")
            else:
                emit(sas_text(shown))
                answer = await read_answer("Do they match? [y/N]: ")
            return answer.lower() in ("y", "yes")

        def waiting(user_id: str) -> None:
            if not args.json:
                emit(f"Waiting for {clean(user_id)} to run `tokenim verify {clean(client.user_id)}`…", sys.stderr)

        return (await client.verification.sas(args.user, confirm, on_waiting=waiting)).to_json()


def human_verified(r: dict[str, Any]) -> str:
    if "safety_number" in r:
        return safety_number_text(r)
    return (
        f"{clean(r['user_id'])} is verified (emoji compared with device {clean(r['device_id'])}): "
        "their master key is recorded as theirs."
    )


__all__ = ["cmd_fingerprint", "cmd_verify", "human_verified", "safety_number_text"]
