"""`tokenim chat --serve`: the same app in a browser on this computer, through textual-serve.

Bound to 127.0.0.1 only. Each page that connects gets its own `tokenim chat` process, which asks for the
profile's passphrase in the page (never taken from the environment here): any program or user on this
computer can reach a port on 127.0.0.1, so the port alone must not unlock the profile. A page is served
only under the address it was opened with (a Host header naming another host, as a DNS-rebinding page
would send, is refused) and the WebSocket that drives the app is accepted only from that same page (an
`Origin` from any other site is refused), so another web site open in the browser cannot drive it.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from aiohttp import web
from textual_serve.server import Server

HOST = "127.0.0.1"
DEFAULT_PORT = 8471


class LocalServer(Server):
    """textual-serve's server, answering only pages and WebSockets of its own local address."""

    def allowed(self, request: web.Request, *, websocket: bool) -> bool:
        """The Host is this server's own address; a WebSocket also comes from its own page."""
        here = f"{HOST}:{self.port}"
        if request.headers.get("Host") not in (here, f"localhost:{self.port}"):
            return False
        if not websocket:
            return True
        return request.headers.get("Origin") in (f"http://{here}", f"http://localhost:{self.port}")

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        if not self.allowed(request, websocket=False):
            raise web.HTTPForbidden(text="This address serves only http://127.0.0.1 on this computer.")
        return await super().handle_index(request)

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        if not self.allowed(request, websocket=True):
            raise web.HTTPForbidden(text="Only the page served here may connect.")
        return await super().handle_websocket(request)


def command_line(profile: Path, notify: str) -> str:
    """The command each page runs (textual-serve starts it through a shell: every part is quoted)."""
    argv = [sys.executable, "-m", "tokenim", "--profile", str(profile.absolute()), "chat", "--in-browser", "--notify", notify]
    return shlex.join(argv)


def serve(profile: Path, port: int, notify: str) -> int:
    """Serve the app on http://127.0.0.1:PORT until Ctrl-C."""
    os.environ.pop("TOKENIM_PASSPHRASE", None)  # each page asks for it: the port alone must not unlock the profile
    server = LocalServer(command_line(profile, notify), host=HOST, port=port, title="TokenIM")
    server.serve()
    return 0


__all__ = ["DEFAULT_PORT", "HOST", "LocalServer", "command_line", "serve"]
