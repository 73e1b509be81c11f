"""The WebSocket: pushes room events and to-device messages, and takes sends and acknowledgements.

Authentication: `Authorization: Bearer <token>` on the upgrade request or, from a browser, the subprotocols
`tokenim.v1, tokenim.bearer.<token>` (answered with `tokenim.v1`).

Frames from the client (JSON text):
  {"type": "sync", "since": POS, "to_device_after": ID}   catch up, then receive live
  {"type": "send", "room_id", "txn_id", "content", "device_seq"?}  -> {"type": "sent", "txn_id", "event_id", "pos", "seq"}
  {"type": "ack_to_device", "up_to": ID}                  the device has stored messages up to ID
  {"type": "ping"}                                        -> {"type": "pong"}
A member a frame's schema (protocol/wire.py, /openapi.json) does not name is refused (invalid_request).
Frames to the client: {"type": "event", "event"}, {"type": "to_device", "message"},
{"type": "synced", "pos"}, {"type": "keys_low"}, and {"type": "error", "error", "txn_id"?}.
Live frames flow only after a `sync`. Close codes: 4401 when the token ends, 1008 for a reader that fell behind,
4429 when the device already has its maximum of open WebSockets (after an error frame `too_many_connections`).
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_room_id
from tokenim.core.limits import MAX_POSITION
from tokenim.protocol.wire import CLIENT_FRAMES
from tokenim.server.api.encoding import json_text
from tokenim.server.api.errors import describe_validation
from tokenim.server.realtime.hub import Connection, Hub
from tokenim.server.services.auth import AuthService
from tokenim.server.services.common import Requester
from tokenim.server.services.messages import MessageService, check_txn_id

MAX_IN_FLIGHT = 256
CATCH_UP_WINDOW = 1000  # frames queued at most while sending a backlog
log = logging.getLogger("tokenim.server.realtime")


def _dumps(obj: dict[str, Any]) -> str:
    return json_text(obj)


async def _drained(conn: Connection) -> None:
    """Backpressure for a long catch-up: let the socket take what is queued before reading the next page."""
    # Polling, not an Event: an Event per socket would cost memory on every idle connection.
    while len(conn.outbox) > CATCH_UP_WINDOW and not conn.closed:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def _catch_up(messages: MessageService, me: Requester, conn: Connection, since: int, to_device_after: int) -> None:
    """Send the backlog from the database (to-device first: room keys before the messages they unlock),
    then release live frames held meanwhile."""
    conn.live, conn.syncing = False, True
    conn.last_pos, conn.last_to_device = since, to_device_after
    while True:
        page = await messages.access_sync(me, conn.last_pos, 1, conn.last_to_device)
        for msg in page.to_device:
            conn.send_to_device(msg["id"], _dumps({"type": "to_device", "message": msg}))
        if len(page.to_device) < 1000 or conn.closed:
            break
        await _drained(conn)
    while True:
        page = await messages.access_sync(me, conn.last_pos, 500, conn.last_to_device)
        for msg in page.to_device:
            conn.send_to_device(msg["id"], _dumps({"type": "to_device", "message": msg}))
        for ev in page.events:
            conn.send_event(ev["pos"], _dumps({"type": "event", "event": ev}))
        conn.last_pos = page.next_pos  # never below `since`, except that a `since` past the head becomes the head
        if not page.limited or conn.closed:
            break
        await _drained(conn)
    conn.push(_dumps({"type": "synced", "pos": conn.last_pos}))
    conn.go_live()


# Strong references to running send tasks (asyncio keeps only weak ones), shared by all sockets so an
# idle connection carries no set of its own.
_RUNNING: set[asyncio.Task[None]] = set()


async def _close_quietly(ws: WebSocket, code: int) -> None:
    """Close without leaving a traceback behind: the peer may be gone or not reading (then give up)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code), 5)


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)


def _error(conn: Connection, err: TokenIMError, **extra: Any) -> None:
    conn.push(_dumps({"type": "error", **extra, **err.to_json()}))


def _txn_echo(txn_id: object) -> dict[str, str]:
    """The txn id to name in the answer, when it is one: anything else (NaN, a lone surrogate) may not be encodable."""
    try:
        return {"txn_id": check_txn_id(txn_id)} if isinstance(txn_id, str) else {}
    except TokenIMError:
        return {}


async def _send(frame: dict[str, Any], conn: Connection, me: Requester, messages: MessageService) -> None:
    """One send frame: committed, then answered with `sent` (or an error naming the txn id, when it is one)."""
    txn_id = frame.get("txn_id")
    echo = _txn_echo(txn_id)
    try:
        room_id, content, seq = frame.get("room_id"), frame.get("content"), frame.get("device_seq")
        if not isinstance(room_id, str) or not isinstance(txn_id, str) or not isinstance(content, dict):
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "A send frame needs room_id, txn_id and a content object.")
        check_room_id(room_id)  # as the HTTP path checks it: nothing else can name a room
        if seq is not None:
            _check_number("device_seq", seq, 1)
        messages.check_send("m.room.encrypted", content, txn_id)
        _check_frame(frame)
        sent = await messages.do_send(me, room_id, txn_id, content, seq)
        conn.push(_dumps({"type": "sent", "txn_id": txn_id, **sent.model_dump()}))
    except TokenIMError as err:
        _error(conn, err, **echo)
    except Exception:  # every send gets an answer, even when something unexpected failed
        log.exception("send over WebSocket failed")
        _error(conn, TokenIMError(ErrorCode.INTERNAL, "Something went wrong on the server; the details are in its log."), **echo)
    finally:
        conn.in_flight -= 1


def _check_number(member: str, value: object, least: int) -> int:
    """A frame's position or send number: an integer from `least` to 2^53 - 1 (what a double holds exactly),
    the same bounds as on HTTP, said with the bounds when it is not."""
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= MAX_POSITION:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"'{member}' must be an integer from {least} to {MAX_POSITION}.")
    return value


def _check_frame(frame: dict[str, Any]) -> None:
    """Last, after the checks with the precise sentences: the frame is exactly what its schema in
    /openapi.json allows (no member the schema does not name)."""
    try:
        CLIENT_FRAMES.validate_python(frame)
    except ValidationError as exc:
        # The first step of each location is the union's tag (the frame type): name members from the frame.
        problems = [{**e, "loc": tuple(e["loc"])[1:]} for e in exc.errors()]
        raise describe_validation(problems, "frame") from None


async def _handle(frame: dict[str, Any], conn: Connection, me: Requester, messages: MessageService) -> None:
    kind = frame.get("type")
    if kind == "send":
        if conn.in_flight >= MAX_IN_FLIGHT:
            raise TokenIMError(ErrorCode.RATE_LIMITED, f"At most {MAX_IN_FLIGHT} sends may wait for their answer at once.")
        conn.in_flight += 1
        _spawn(_send(frame, conn, me, messages))
    elif kind == "sync":
        since = _check_number("since", frame.get("since", 0), 0)
        after = _check_number("to_device_after", frame.get("to_device_after", 0), 0)
        _check_frame(frame)
        await _catch_up(messages, me, conn, since, after)
    elif kind == "ack_to_device":
        up_to = _check_number("up_to", frame.get("up_to"), 0)
        _check_frame(frame)
        await messages.do_ack_to_device(me, up_to)
    elif kind == "ping":
        _check_frame(frame)
        conn.push('{"type":"pong"}')
    else:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"Unknown frame type {str(kind)[:40]!r}.")


async def _refuse(ws: WebSocket, err: TokenIMError, code: int, subprotocol: str | None = None) -> None:
    await ws.accept(subprotocol=subprotocol)
    await ws.send_text(_dumps(err.to_json() | {"type": "error"}))
    await ws.close(code=code)


WS_PROTOCOL = "tokenim.v1"
WS_BEARER_PREFIX = "tokenim.bearer."


def ws_credentials(authorization: str | None, offered: list[str]) -> tuple[str | None, str | None]:
    """(the Authorization value to check, the subprotocol to answer with).

    A browser cannot set headers on a WebSocket, so it may offer the subprotocols `tokenim.v1` and
    `tokenim.bearer.<access token>` instead; the server answers `tokenim.v1` (a browser insists that the
    answer is one it offered) and never echoes the token. An Authorization header, when present, wins.
    """
    protocols = [p.strip() for p in offered]
    answer = WS_PROTOCOL if WS_PROTOCOL in protocols else None
    if authorization is not None:
        return authorization, answer
    tokens = [p[len(WS_BEARER_PREFIX) :] for p in protocols if p.startswith(WS_BEARER_PREFIX)]
    return (f"Bearer {tokens[0]}" if tokens and answer else None), answer


def build_realtime_route(
    auth: AuthService, messages: MessageService, hub: Hub, max_per_device: int | None = None
) -> WebSocketRoute:
    """A plain Starlette route (no FastAPI dependency machinery): less memory for every connected device.

    A device may hold at most `max_per_device` sockets at once; one more is refused (close code 4429).
    """

    async def websocket(ws: WebSocket) -> None:
        # ASGI servers hand the offered subprotocols over in the scope (wsproto drops them from the headers).
        offered = list(ws.scope.get("subprotocols") or [])
        authorization, subprotocol = ws_credentials(ws.headers.get("authorization"), offered)
        try:
            me = await auth.access_requester(authorization)
        except TokenIMError as err:
            await _refuse(ws, err, 4401, subprotocol)
            return
        conn = Connection(
            me.user_id,
            me.device_id,
            ws.send_text,
            session_id=me.session_id,
            expires_at=me.expires_at,
            close=lambda code: _spawn(_close_quietly(ws, code)),
        )
        if not hub.register(conn, max_per_device=max_per_device):
            too_many = TokenIMError(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"This device already has {max_per_device} WebSockets open: close one before opening another.",
            )
            await _refuse(ws, too_many, 4429, subprotocol)
            return
        try:
            await ws.accept(subprotocol=subprotocol)
            while not conn.closed:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if hub.expired(conn):  # the token ran out: say so with 4401, then the client refreshes
                    conn.close()
                    await _close_quietly(ws, 4401)
                    break
                text = message.get("text")
                try:
                    if text is None:
                        raise TokenIMError(ErrorCode.BAD_JSON, "Frames must be JSON text, not binary.")
                    try:
                        frame = json.loads(text)
                    except (ValueError, RecursionError):
                        frame = None
                    if not isinstance(frame, dict):
                        raise TokenIMError(ErrorCode.BAD_JSON, "That frame is not a JSON object.")
                    await _handle(frame, conn, me, messages)
                except TokenIMError as err:
                    _error(conn, err)
        except WebSocketDisconnect:
            pass
        finally:
            hub.unregister(conn)

    return WebSocketRoute("/v1/ws", websocket)
