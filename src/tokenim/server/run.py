"""`tokenim serve`: load config, lock the data directory, bind the port, prepare the database, then
announce (bootstrap invite, "serving") and run uvicorn on the socket already bound.

Everything that can refuse to start (a bad config, another server on the data directory, a port in
use) happens before anything is printed or written, so a server that cannot start changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import resource
import socket
import sys
from collections.abc import Mapping
from typing import Any

import uvicorn

from tokenim import __version__
from tokenim.core.clock import SystemClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.limits import DEFAULT_INVITE_TTL_MS
from tokenim.server.app import build_app, build_services
from tokenim.server.config import Config, load_config
from tokenim.server.connections import ConnectionGuard, ConnectionLimits, guarded_protocols, resolve_max_connections
from tokenim.server.secret_box import SecretBox
from tokenim.server.storage.database import Database

LOCK_FILE = "tokenim.lock"
EXIT_BAD_CONFIG = 2
EXIT_CANNOT_START = 3  # the data directory is in use, or the port is taken


class CannotStart(Exception):
    """Another server holds what this one needs; the message is one sentence for the operator."""


def prepare_data_dir(config: Config) -> None:
    """Create the data directory, readable by its owner only."""
    config.server.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def lock_data_dir(config: Config) -> int:
    """Take the data directory for this process (an exclusive flock held until it exits); the open file is returned.

    Two servers on one directory would share the SQLite file and the blobs while each believes it is
    the only writer. The lock ends with the process however it ends, SIGKILL included.
    """
    path = config.server.data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        who = f" (process {holder})" if holder.isdigit() else ""
        raise CannotStart(f"another server{who} is already running on the data directory {config.server.data_dir}.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def bind_socket(config: Config) -> socket.socket:
    """Bind and listen before announcing anything: a taken port is reported before an invite is printed."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(config.server.host, config.server.port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise CannotStart(f"cannot listen on {config.server.host}: no such host or address.") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
        raise CannotStart(f"cannot listen on {config.server.host}:{config.server.port}: {reason}.") from None
    return sock


def connection_limits(config: Config) -> ConnectionLimits:
    """The connection caps and timeouts, the total cap below this process's open-file limit."""
    open_files, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if open_files == resource.RLIM_INFINITY:
        open_files = 1 << 20
    return ConnectionLimits(
        max_connections=resolve_max_connections(config.server.max_connections, open_files),
        max_per_address=config.server.max_connections_per_address,
        header_timeout=config.server.header_timeout_seconds,
        body_timeout=config.server.body_timeout_seconds,
    )


async def _serve(config: Config, sock: socket.socket, limits: ConnectionLimits, box: SecretBox) -> None:
    clock = SystemClock()
    db = Database(config.database_url, debug_commit_delay_ms=config.database.debug_commit_delay_ms)
    try:
        try:
            await db.migrate()
        except Exception as exc:  # a driver's own error types: report them in one line, not a traceback
            raise TokenIMError(
                ErrorCode.BAD_CONFIG,
                f"Cannot open the database: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            ) from None
        services = build_services(config, db, clock, secret_box=box)
        invite = await services.accounts.do_bootstrap_invite(DEFAULT_INVITE_TTL_MS)
        if invite is not None:
            print(f"Bootstrap invite for the first (admin) account: {invite.code}", flush=True)
            url = f"http://{config.server.host}:{config.server.port}"
            print(f"  register with: tokenim register --server {url} --username NAME --invite {invite.code}", flush=True)
        app = build_app(config, db, clock, services)
        http_protocol, ws_protocol = guarded_protocols(ConnectionGuard(limits), config.server.websocket)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.server.host,
                port=config.server.port,
                log_level=config.server.log_level,
                access_log=False,
                lifespan="off",
                http=http_protocol,
                ws=ws_protocol,
                ws_max_size=config.server.max_body_bytes,
                ws_ping_interval=None,
            )
        )
        print(
            f"TokenIM {__version__} serving {config.server.server_name} on http://{config.server.host}:{config.server.port}",
            flush=True,
        )
        jobs = asyncio.get_running_loop().create_task(services.scheduler.run_forever(), name="tokenim-scheduler")
        try:
            await server.serve(sockets=[sock])
        finally:
            jobs.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jobs
    finally:
        await db.close()


def serve(*, config_file: str | None, flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> int:
    """Run the server until interrupted; a bad configuration fails at once with one clear line."""
    env = os.environ if env is None else env
    try:
        config = load_config(config_file=config_file, env=env, flags=flags)
        limits = connection_limits(config)
        prepare_data_dir(config)
    except TokenIMError as err:
        print(f"tokenim serve: {err.message}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except OSError as err:
        print(f"tokenim serve: cannot create the data directory: {err.strerror}.", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        lock = lock_data_dir(config)
    except CannotStart as err:
        print(f"tokenim serve: {err}", file=sys.stderr)
        return EXIT_CANNOT_START
    except OSError as err:
        print(f"tokenim serve: cannot lock the data directory: {err.strerror}.", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        box = SecretBox.from_settings(config.key_file, env)
        try:
            box.ready()  # the server key, read (or made, mode 600) now: a bad one stops the start, before any output
        except TokenIMError as err:
            print(f"tokenim serve: {err.message}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        return _run(config, limits, box)
    finally:
        os.close(lock)


def _run(config: Config, limits: ConnectionLimits, box: SecretBox) -> int:
    try:
        sock = bind_socket(config)
    except CannotStart as err:
        print(f"tokenim serve: {err}", file=sys.stderr)
        return EXIT_CANNOT_START
    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        with contextlib.closing(sock):
            asyncio.run(_serve(config, sock, limits, box))
    except TokenIMError as err:
        print(f"tokenim serve: {err.message}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except OSError as err:
        print(f"tokenim serve: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except KeyboardInterrupt:
        pass
    return 0
