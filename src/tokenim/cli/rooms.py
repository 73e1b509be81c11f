"""`tokenim rooms` and `tokenim room …`: list, create, invite, join, leave, remove, rename, members."""

from __future__ import annotations

import argparse
import re
from typing import Any

from tokenim.cli.account import open_client
from tokenim.cli.output import clean
from tokenim.client import Client
from tokenim.core.errors import ErrorCode, TokenIMError

MAX_ROOM_NAME = 255  # characters, as the server counts them (protocol/api.py)


def split_users(values: list[str]) -> list[str]:
    """`--invite @a --invite @b` and `--invite @a @b` and `--invite @a,@b` all mean the same two people."""
    return [u for v in values for u in re.split(r"[,\s]+", v) if u]


def check_room_name(name: str) -> None:
    """The server's limit on a room name, said in the CLI's words before anything is sent."""
    if len(name) > MAX_ROOM_NAME:
        raise TokenIMError(
            ErrorCode.INVALID_REQUEST, f"A room name is at most {MAX_ROOM_NAME} characters; this one has {len(name):,}."
        )


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
    check_room_name(name)
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
        if action == "rename":
            check_room_name(args.name)
        room_id = await client.rooms.resolve(args.room, prefer="invite" if action == "join" else "join")
        if action in ("invite", "remove"):
            return await _each_person(client, room_id, action, args.users)
        if action == "join":
            summary = await client.rooms.get(room_id)
            if summary.membership == "join":
                return {**summary.model_dump(), "already": True}
            return (await client.rooms.join(room_id)).model_dump()
        if action == "leave":
            summary = await client.rooms.get(room_id)
            await client.rooms.leave(room_id)
            return {**_named(summary.model_dump()), "left": True}
        if action == "rename":
            await client.rooms.rename(room_id, args.name)
            return (await client.rooms.get(room_id)).model_dump()
        return (await client.rooms.members(room_id)).model_dump()


def _named(room: dict[str, Any]) -> dict[str, Any]:
    """How a membership change names its room: id, kind, name and (for a direct chat) members."""
    return {k: room[k] for k in ("room_id", "kind", "name", "members")}


async def _each_person(client: Client, room_id: str, action: str, users: list[str]) -> dict[str, Any]:
    """Invite or remove each person in turn; one failure does not stop the others, and each is reported."""
    done: list[str] = []
    failed: list[dict[str, Any]] = []
    # Named before anything changes: removing yourself leaves the room, and then it can no longer be read.
    room = _named((await client.rooms.get(room_id)).model_dump())
    for user in users:
        user_id = client.full_user_id(user)
        try:
            await (client.rooms.invite if action == "invite" else client.rooms.remove)(room_id, user_id)
            done.append(user_id)
        except TokenIMError as err:
            failed.append({"user_id": user_id, **err.to_json()})
    return {**room, "invited" if action == "invite" else "removed": done, "failed": failed}


def human_room(r: dict[str, Any], action: str) -> str:
    if action == "members":
        return "\n".join(f"{clean(m['user_id'])}  {m['role']:6}  {m['membership']}" for m in r["members"])
    if action in ("invite", "remove"):
        done = r["invited" if action == "invite" else "removed"]
        verb, word = ("Invited", "to") if action == "invite" else ("Removed", "from")
        lines = [f"{verb} {', '.join(clean(u) for u in done)} {word} {room_label(r)}."] if done else []
        lines += [f"Not {verb.lower()}: {clean(f['user_id'])}: {clean(f['error']['message'])}" for f in r["failed"]]
        return "\n".join(lines)
    if action == "leave":
        return f"Left {room_label(r)}."
    if action == "join" and r.get("already"):
        return f"You are already in {room_label(r)}."
    verb = {"create": "Created", "join": "Joined", "rename": "Renamed to"}[action]
    return f"{verb} {room_label(r)}."


__all__ = [
    "check_room_name",
    "cmd_room",
    "cmd_rooms",
    "create_arguments",
    "human_room",
    "human_rooms",
    "room_label",
    "split_users",
]
