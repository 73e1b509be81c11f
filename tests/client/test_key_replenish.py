"""Published one-time keys are topped up when others claim them, and a used fallback key is replaced."""

from __future__ import annotations

import asyncio

from tests.support import insides
from tokenim.client import Client
from tokenim.core.limits import ONE_TIME_KEY_TARGET
from tokenim.server.realtime.hub import Connection, Hub


async def test_sync_tops_up_claimed_one_time_keys_and_replaces_a_used_fallback(alice: Client, bob: Client) -> None:
    assert (await alice.keys.counts()).one_time_keys == ONE_TIME_KEY_TARGET
    for _ in range(ONE_TIME_KEY_TARGET + 2):  # every one-time key, then the fallback key twice
        await bob.keys.claim({alice.user_id: [alice.device_id]})
    counts = await alice.keys.counts()
    assert counts.one_time_keys == 0 and not counts.has_fallback_key
    await alice.messages.sync()
    counts = await alice.keys.counts()
    assert counts.one_time_keys == ONE_TIME_KEY_TARGET and counts.has_fallback_key
    # The new keys were published and marked so on this device; nothing is re-sent on the next sync.
    assert insides(alice).identity.account.one_time_keys == {}


async def test_hub_tells_a_live_device_its_keys_run_low() -> None:
    sent: list[str] = []

    async def send(frame: str) -> None:
        sent.append(frame)

    hub = Hub()
    live, other = Connection("@a:x", "DEV1AA", send), Connection("@a:x", "DEV2BB", send)
    live.live = True
    hub.register(live)
    hub.register(other)
    hub.notify_keys_low("@a:x", "DEV1AA")
    await asyncio.sleep(0)
    assert sent == ['{"type":"keys_low"}']


async def test_hub_closes_a_socket_whose_token_expired_and_one_that_stops_reading() -> None:
    from tokenim.core.clock import FakeClock
    from tokenim.server.realtime.hub import MAX_QUEUED_FRAMES

    clock = FakeClock()
    closed: list[int] = []

    async def never_done(frame: str) -> None:
        await asyncio.Event().wait()

    hub = Hub(clock)
    conn = Connection("@a:x", "DEV1AA", never_done, expires_at=clock.now_ms() + 1000, close=closed.append)
    conn.live = True
    hub.register(conn)
    assert not hub.expired(conn)
    clock.advance(seconds=2)
    assert hub.expired(conn) and hub._kick_if_expired(conn) and closed == [4401] and conn.closed

    slow = Connection("@b:x", "DEV2BB", never_done, close=closed.append)
    slow.live = True
    for _ in range(MAX_QUEUED_FRAMES + 2):
        slow.push("{}")
    assert closed == [4401, 1008] and slow.closed
    slow.close()
