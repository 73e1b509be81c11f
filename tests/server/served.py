"""Helpers for tests of what the server serves back: raw requests, strict JSON reading, and a WebSocket sync.

Reading is strict on purpose: a body must be valid UTF-8 and standard JSON (no NaN or Infinity,
no lone surrogate), since that is what every other client implementation will demand.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI

from tests.support import websocket_scope
from tokenim.client import Client

JSON_HEADERS = {"content-type": "application/json"}


def auth(client: Client) -> dict[str, str]:
    token = client.account.access_token()
    return {"Authorization": f"Bearer {token}"}


def _no_constants(name: str) -> Any:
    raise AssertionError(f"the server wrote {name}, which is not JSON")


def _no_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # raises on a lone surrogate (from a "\ud800" escape)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def strict_json(data: bytes | str) -> Any:
    """Parse what the server sent as strictly as a careful client in another language would."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    value = json.loads(text, parse_constant=_no_constants)
    _no_surrogates(value)
    return value


async def raw_request(http: httpx.AsyncClient, method: str, path: str, body: bytes, client: Client | None) -> httpx.Response:
    """Send `body` byte for byte (so it can hold `\\ud800` escapes, NaN or deep nesting)."""
    headers = JSON_HEADERS | (auth(client) if client is not None else {})
    return await http.request(method, path, content=body, headers=headers)


async def http_sync(http: httpx.AsyncClient, client: Client, **params: int) -> dict[str, Any]:
    """One HTTP sync page: it must answer 200 with strict JSON."""
    resp = await http.get("/v1/sync", params=params, headers=auth(client))
    assert resp.status_code == 200, resp.text
    body = strict_json(resp.content)
    assert isinstance(body, dict)
    return body


async def http_history(http: httpx.AsyncClient, client: Client, room_id: str) -> dict[str, Any]:
    resp = await http.get(f"/v1/rooms/{room_id}/history", params={"limit": 1000}, headers=auth(client))
    assert resp.status_code == 200, resp.text
    body = strict_json(resp.content)
    assert isinstance(body, dict)
    return body


async def websocket_session(
    app: FastAPI, client: Client, frames: list[dict[str, Any]], *, until: str | tuple[str, ...]
) -> list[dict[str, Any]]:
    """Speak raw ASGI to /v1/ws: send `frames`, collect frames until one of a type in `until` (deadline 10 s).

    Every frame the server writes must be strict JSON.
    """
    token = auth(client)["Authorization"].removeprefix("Bearer ")
    wanted = (until,) if isinstance(until, str) else until
    inbox: list[dict[str, Any]] = [{"type": "websocket.connect"}]
    inbox += [{"type": "websocket.receive", "text": json.dumps(f)} for f in frames]
    answers: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await done.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            assert "text" in message and message.get("bytes") is None, message
            frame = strict_json(message["text"])
            answers.append(frame)
            if frame.get("type") in wanted:
                done.set()
        elif message["type"] == "websocket.close":
            done.set()

    scope = websocket_scope(token)
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert any(a.get("type") in wanted for a in answers), answers
    return answers


async def websocket_sync(app: FastAPI, client: Client) -> list[dict[str, Any]]:
    """Catch up from the beginning over the WebSocket: every frame up to `synced`."""
    return await websocket_session(app, client, [{"type": "sync", "since": 0, "to_device_after": 0}], until="synced")
