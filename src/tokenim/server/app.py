"""`build_app` wires config, storage and clock into services and routes: everything explicit."""

from __future__ import annotations

from fastapi import FastAPI

from tokenim import __version__
from tokenim.core.clock import Clock
from tokenim.server.api.errors import BodyLimitMiddleware, install_error_handlers
from tokenim.server.api.routes import Services, build_router
from tokenim.server.config import ServerConfig
from tokenim.server.services.accounts import AccountService
from tokenim.server.services.auth import AuthService
from tokenim.server.services.common import Auditor, Context
from tokenim.server.services.devices import DeviceService
from tokenim.server.services.keys import KeyService
from tokenim.server.storage.accounts import AccountStore
from tokenim.server.storage.audit import AuditStore
from tokenim.server.storage.auth import AuthStore
from tokenim.server.storage.database import Database
from tokenim.server.storage.keys import OneTimeKeyStore


def build_services(config: ServerConfig, db: Database, clock: Clock) -> Services:
    """Construct every service with exactly what it needs."""
    ctx = Context(
        db=db,
        clock=clock,
        server_name=config.server_name,
        accounts=AccountStore(),
        keys=OneTimeKeyStore(),
        auth=AuthStore(),
        auditor=Auditor(AuditStore(), clock),
    )
    accounts = AccountService(ctx, config.registration)
    return Services(accounts=accounts, auth=AuthService(ctx), keys=KeyService(ctx, accounts), devices=DeviceService(ctx))


def build_app(config: ServerConfig, db: Database, clock: Clock, services: Services | None = None) -> FastAPI:
    """The ASGI application. The database must already be migrated."""
    services = services or build_services(config, db, clock)
    app = FastAPI(title="TokenIM", version=__version__, docs_url="/docs", openapi_url="/openapi.json")
    install_error_handlers(app)
    app.include_router(build_router(services, config.server_name))
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.state.services = services
    return app
