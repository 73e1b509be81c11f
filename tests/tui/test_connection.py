"""`tokenim chat` and the connection: a banner while offline that goes when the server is back; a message
whose key has not arrived shows as waiting (with a banner) and fills in when the key comes; in browser mode
the passphrase is asked on screen."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import PASSPHRASE
from tests.tui.conftest import SIZE, LiveServer, LiveUser, chat_app, until, wait_screen
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.tui import ChatApp
from tokenim.tui.screens import PassphraseScreen
from tokenim.tui.widgets import Banner


class HeldKeys(httpx.AsyncBaseTransport):
    """Bob's connection, which can hold back the room keys he sends (to-device messages): his messages then
    reach Alice before their keys, as on a slow or broken path. `release()` sends what was held."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.holding = False
        self.held: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.holding and request.method == "POST" and request.url.path == "/v1/to_device":
            await request.aread()
            self.held.append(request)
            return httpx.Response(200, json={"ok": True})
        return await self.inner.handle_async_request(request)

    async def release(self) -> None:
        self.holding = False
        for request in self.held:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            assert response.status_code == 200, response.text

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_message_waits_for_its_key_and_fills_in(live_user: LiveUser) -> None:
    alice = await live_user("alice")
    held = HeldKeys()
    bob = await live_user("bob", transport=held)
    direct = await bob.rooms.direct("@alice")
    app = chat_app(alice)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.synced_once, "the app to connect")
        held.holding = True
        await bob.messages.send_text(direct.room_id, "the secret plan")
        assert held.held
        shown = await wait_screen(pilot, "🔒 waiting for the key to this message")
        assert "1 message wait for their keys; they fill in when the keys arrive." in shown
        await held.release()
        shown = await wait_screen(pilot, "@bob ?: the secret plan")
        assert "waiting for the key" not in shown and not app.query_one("#keys", Banner).display


async def test_offline_banner_and_reconnection(live_user: LiveUser, live_server: LiveServer) -> None:
    alice, bob = await live_user("alice"), await live_user("bob")
    direct = await bob.rooms.direct("@alice")
    app = chat_app(alice)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.synced_once, "the app to connect")
        banner = app.query_one("#offline", Banner)
        assert not banner.display
        await live_server.stop()
        shown = await wait_screen(pilot, "Offline: ")
        assert "Reconnecting in" in shown and banner.display
        await live_server.start()
        await until(lambda: not banner.display, "the banner to go once reconnected", timeout=30)
        await bob.messages.send_text(direct.room_id, "back again")
        await wait_screen(pilot, "back again")


async def test_browser_mode_asks_for_the_passphrase(live_user: LiveUser, clock: FakeClock, tmp_path: Path) -> None:
    alice = await live_user("alice")
    await alice.close()  # one client per profile at a time
    path = tmp_path / "profile-alice"  # where live_user made it

    async def opener(passphrase: str) -> Client:
        return await Client.open(path, passphrase, clock=clock)

    app = ChatApp(opener=opener, profile=str(path))
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, PassphraseScreen)
        await pilot.press(*"wrong", "enter")
        await wait_screen(pilot, "The passphrase is wrong: the profile stays locked.")
        assert isinstance(app.screen, PassphraseScreen) and app.client is None
        for ch in PASSPHRASE:
            await pilot.press("space" if ch == " " else ch)
        await pilot.press("enter")
        await wait_screen(pilot, "TokenIM · @alice:tokenim.test")
        assert app.client is not None
    await app.client.close()
