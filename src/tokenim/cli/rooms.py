"""`tokenim rooms` and `tokenim room …`: list, create, invite, join, leave, remove, rename, members."""

from __future__ import annotations

import argparse
import re
from typing import Any

from tokenim.cli.account import open_client
from tokenim.cli.output import clean
from tokenim.core.errors import ErrorCode, TokenIMError


def split_users(values: list[str]) -> list[str]:
    """`--invite @a --invite @b` and `--invite @a @b` and `--invite @a,@b` all mean the same two people."""
    return [u for v in values for u in re.split(r"[,\s]+", v) if u]


def create_arguments(name: str | None, invite: list[str]) -> tuple[str, list[str]]:
    """The room name and the people to invite, whichever order they were typed in.

    `--invite` takes every word after it, so in `--invite @a @b plans` the last word is the name: people are
    always written with `@`, which tells the two apart.
    """
    users = split_users(invite)
    if name is None and users and not users[-1].startswith("@"):
        name = users.pop()
    if name is None or not name.strip():
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "Give the room a name: tokenim room create NAME [--invite @user …].")
    for user in users:
        if not user.startswith("@"):
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST, f"'{user}' is not a person: write people with an @, e.g. --invite @bob."
            )
    return name, users


def room_label(r: dict[str, Any]) -> str:
    """How a room is named in a sentence: its name, or the people in a direct chat; always with its id."""
    if r.get("kind") == "direct":
        return f"direct chat with {', '.join(clean(m) for m in r['members'])} ({clean(r['room_id'])})"
    return f"'{clean(r['name'])}' ({clean(r['room_id'])})"


async def cmd_rooms(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        return {"rooms": [r.model_dump() for r in (await client.rooms.all()).rooms]}


def human_rooms(r: dict[str, Any]) -> str:
    lines = []
    for room in r["rooms"]:
        name = clean(room["name"]) if room["kind"] == "group" else "with " + ", ".join(clean(m) for m in room["members"])
        lines.append(f"{clean(room['room_id'])}  {room['kind']:6}  {room['membership']:6}  {name}")
    return "\n".join(lines) or "No rooms yet."


async def cmd_room(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        action = args.room_command
        if action == "create":
            name, users = create_arguments(args.name, args.invite)
            return (await client.rooms.create(name, users)).model_dump()
        room_id = await client.rooms.resolve(args.room)
        if action == "invite":
            for user in args.users:
                await client.rooms.invite(room_id, user)
            return {"room_id": room_id, "invited": [client.full_user_id(u) for u in args.users]}
        if action == "join":
            return (await client.rooms.join(room_id)).model_dump()
        if action == "leave":
            await client.rooms.leave(room_id)
            return {"room_id": room_id, "left": True}
        if action == "remove":
            for user in args.users:
                await client.rooms.remove(room_id, user)
            return {"room_id": room_id, "removed": [client.full_user_id(u) for u in args.users]}
        if action == "rename":
            await client.rooms.rename(room_id, args.name)
            return (await client.rooms.get(room_id)).model_dump()
        return (await client.rooms.members(room_id)).model_dump()


def human_room(r: dict[str, Any], action: str) -> str:
    if action == "members":
        return "\n".join(f"{clean(m['user_id'])}  {m['role']:6}  {m['membership']}" for m in r["members"])
    if action == "invite":
        return f"Invited {', '.join(clean(u) for u in r['invited'])} to {clean(r['room_id'])}."
    if action == "remove":
        return f"Removed {', '.join(clean(u) for u in r['removed'])} from {clean(r['room_id'])}."
    if action == "leave":
        return f"Left {clean(r['room_id'])}."
    verb = {"create": "Created", "join": "Joined", "rename": "Renamed to"}[action]
    return f"{verb} {room_label(r)}."


__all__ = ["cmd_room", "cmd_rooms", "create_arguments", "human_room", "human_rooms", "room_label", "split_users"]
