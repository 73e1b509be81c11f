"""`tokenim serve`: load config, prepare the data directory and database, print the bootstrap invite, run uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import uvicorn

from tokenim import __version__
from tokenim.core.clock import SystemClock
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.limits import DEFAULT_INVITE_TTL_MS
from tokenim.server.app import build_app, build_services
from tokenim.server.config import ServerConfig, load_config
from tokenim.server.storage.database import Database


def prepare_data_dir(config: ServerConfig) -> None:
    """Create the data directory, readable by its owner only."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


async def _serve(config: ServerConfig) -> None:
    clock = SystemClock()
    db = Database(config.database_url)
    try:
        try:
            await db.migrate()
        except Exception as exc:  # a driver's own error types: report them in one line, not a traceback
            raise TokenIMError(
                ErrorCode.BAD_CONFIG,
                f"Cannot open the database: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            ) from None
        services = build_services(config, db, clock)
        invite = await services.accounts.do_bootstrap_invite(DEFAULT_INVITE_TTL_MS)
        if invite is not None:
            print(f"Bootstrap invite for the first (admin) account: {invite.code}", flush=True)
            url = f"http://{config.host}:{config.port}"
            print(f"  register with: tokenim register --server {url} --username NAME --invite {invite.code}", flush=True)
        app = build_app(config, db, clock, services)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_level=config.log_level,
                access_log=False,
                lifespan="off",
                ws=config.websocket,
                ws_max_size=config.max_body_bytes,
                ws_ping_interval=None,
            )
        )
        print(f"TokenIM {__version__} serving {config.server_name} on http://{config.host}:{config.port}", flush=True)
        await server.serve()
    finally:
        await db.close()


def serve(*, config_file: str | None, flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> int:
    """Run the server until interrupted; a bad configuration fails at once with one clear line."""
    try:
        config = load_config(config_file=config_file, env=os.environ if env is None else env, flags=flags)
        prepare_data_dir(config)
    except TokenIMError as err:
        print(f"tokenim serve: {err.message}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"tokenim serve: cannot create the data directory: {err.strerror}.", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        asyncio.run(_serve(config))
    except TokenIMError as err:
        print(f"tokenim serve: {err.message}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"tokenim serve: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
