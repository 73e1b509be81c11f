"""`tokenim send`, `send-file`, `download`, `read` and `listen`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tokenim.cli.account import open_client
from tokenim.cli.output import clean, emit, emit_json, message_text, public_message, size
from tokenim.client.attention import RoomKinds, attention_of
from tokenim.client.files import safe_file_name
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.events import MAX_CONTENT_BYTES

if TYPE_CHECKING:
    from tokenim.client import Client, Message

# Text read from a file or standard input: anything much bigger can't fit in a message anyway.
MAX_TEXT_INPUT_BYTES = 4 * MAX_CONTENT_BYTES


def message_input(args: argparse.Namespace) -> tuple[str, bool]:
    """The text to send, and whether it came from a file or standard input (sizes then speak in bytes)."""
    if args.file is not None and args.text is not None:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "Give the text or --file, not both.")
    if args.file is None and args.text is None:
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, "Give the text to send, '-' to read it from standard input, or --file PATH."
        )
    if args.text is not None and args.text != "-":
        return args.text, False
    source = "standard input" if args.file is None else str(args.file)
    try:
        if args.file is None:
            raw = sys.stdin.buffer.read(MAX_TEXT_INPUT_BYTES + 1)
        else:
            with Path(args.file).open("rb") as fh:
                raw = fh.read(MAX_TEXT_INPUT_BYTES + 1)
    except OSError as exc:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Cannot read {source}: {exc.strerror or 'the read failed'}.") from None
    if len(raw) > MAX_TEXT_INPUT_BYTES:
        raise TokenIMError(
            ErrorCode.BODY_TOO_LARGE,
            f"The text in {source} is over {size(MAX_TEXT_INPUT_BYTES)}, far more than one message holds: "
            "send it as a file with `tokenim send-file`.",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"The text in {source} is not UTF-8: send it as a file with `tokenim send-file`."
        ) from None
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text, True


async def cmd_send(args: argparse.Namespace) -> dict[str, Any]:
    text, from_bytes = message_input(args)
    if not text.strip():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "The message is empty: nothing was sent.")
    async with await open_client(args) as client:
        room_id = await _room_to_send_to(client, args.target, text)
        try:
            sent = await client.messages.send_text(room_id, text)
        except TokenIMError as err:
            if err.code is not ErrorCode.BODY_TOO_LARGE or not from_bytes or "max_length" not in err.details:
                raise
            fits = len(text[: err.details["max_length"]].encode())
            raise TokenIMError(
                err.code,
                f"This text is {len(text.encode()):,} bytes; one message holds at most {fits:,} bytes of it "
                f"(the limit is {MAX_CONTENT_BYTES:,} bytes once encrypted and encoded). Nothing was sent.",
                details={"length_bytes": len(text.encode()), "max_length_bytes": fits},
            ) from None
        return {"room_id": room_id, **sent.model_dump()}


async def _room_to_send_to(client: Client, target: str, text: str) -> str:
    """The room for `send`; a direct chat is started only for a message that can be sent (a refused
    message must leave nothing behind, not even a new chat in the other person's list)."""
    try:
        return await client.rooms.resolve(target)
    except TokenIMError as err:
        if err.code is not ErrorCode.NOT_FOUND or not target.startswith("@"):
            raise
    plaintext = json.dumps({"type": "m.text", "body": text, "room_id": "!" + "x" * 20}).encode()
    fits = MAX_CONTENT_BYTES * 3 // 4  # base64 makes 4 characters of every 3 bytes: nothing longer fits
    if len(plaintext) > fits:
        raise TokenIMError(
            ErrorCode.BODY_TOO_LARGE,
            f"This text is {len(text.encode()):,} bytes, more than one message holds "
            f"(under {fits:,} bytes once encoded). Nothing was sent and no chat was started.",
        )
    return await client.rooms.resolve(target, create=True)


async def cmd_send_file(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        room_id = await client.rooms.resolve(args.target, create=True)
        sent = await client.files.send(room_id, Path(args.path))
        return {"room_id": room_id, **sent.model_dump()}


def human_sent(r: dict[str, Any]) -> str:
    return f"Sent {clean(r['event_id'])} to {clean(r['room_id'])}." + _left_out_text(r)


def _left_out_text(result: dict[str, Any]) -> str:
    """After "Sent …": every member device that did not get the message, and why."""
    excluded = result.get("excluded") or []
    if not excluded:
        return ""
    lines = [f"\nWarning: {len(excluded)} member device(s) left out; they cannot read this message:"]
    for e in excluded:
        who = clean(e["user_id"]) + (f" device {clean(e['device_id'])}" if e.get("device_id") else " (all devices)")
        lines.append(f"  {who}: {clean(e['message'])}")
    return "\n".join(lines)


def destination(out: str | None, name: str) -> Path:
    """Where a download goes: the file's own (made safe) name in the current folder, or in `--out DIR`,
    or exactly `--out FILE`."""
    safe = safe_file_name(name)
    if out is None:
        return Path.cwd() / safe
    path = Path(out).expanduser()
    if path.is_dir() or out.endswith(("/", "\\")):
        return path / safe
    return path


async def cmd_download(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        info = await client.files.describe(args.event)
        out = destination(args.out, info["name"]).absolute()
        await client.files.download(args.event, out, overwrite=args.force)
        return {
            "event_id": args.event,
            "out": str(out),
            "name": info["name"],
            "size": info["size"],
            "sha256": info["sha256"],
        }


def human_download(r: dict[str, Any]) -> str:
    return f"Saved {clean(r['name'])} ({size(int(r['size']))}, hash checked) to {clean(r['out'])}."


async def cmd_read(args: argparse.Namespace) -> dict[str, Any]:
    if not 1 <= args.limit <= 1000:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "--limit is a number of messages from 1 to 1000.")
    async with await open_client(args) as client:
        room_id = await client.rooms.resolve(args.target)
        await client.messages.sync()
        messages = await client.messages.history(room_id, args.limit)
        return {"messages": [public_message(m.to_json()) for m in messages]}


def human_read(r: dict[str, Any]) -> str:
    return "\n".join(message_text(m) for m in r["messages"]) or "No messages."


class _Reconnects(asyncio.Event):
    """The `ready` event `listen` sets each time it is caught up: after a retry, says "reconnected" (text mode)."""

    def __init__(self, announce: bool) -> None:
        super().__init__()
        self.announce = announce
        self.retrying = False

    def retry(self, reason: str, delay: float) -> None:
        self.retrying = True
        emit(f"tokenim: {reason}; reconnecting in {max(1, round(delay))} s…", sys.stderr)

    def set(self) -> None:
        if self.retrying and self.announce:
            emit("tokenim: reconnected.", sys.stderr)
        self.retrying = False
        super().set()


async def cmd_listen(args: argparse.Namespace) -> None:
    async with await open_client(args) as client:
        kinds = RoomKinds(client.rooms)  # --json says whether each message came in a direct chat
        ready = _Reconnects(announce=not args.json)
        # aclosing: a closed stdout (`listen | head -1`) ends the stream here, not in a half-closed generator.
        stream = cast("AsyncGenerator[Message, None]", client.messages.listen(ready=ready, on_retry=ready.retry))
        async with contextlib.aclosing(stream):
            async for message in stream:
                if args.json:
                    attention = await attention_of(message, client.user_id, kinds)
                    flags = {"mention": attention.mention, "direct": attention.direct}  # what `tokenim chat` rings for
                    emit_json(public_message(message.to_json()) | flags)
                else:
                    emit(message_text(message.to_json()))


__all__ = ["cmd_download", "cmd_listen", "cmd_read", "cmd_send", "cmd_send_file", "destination", "message_input"]
