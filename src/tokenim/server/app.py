"""`build_app` wires config, storage and clock into services and routes: everything explicit."""

from __future__ import annotations

import secrets

from fastapi import FastAPI

from tokenim import __version__
from tokenim.core.clock import Clock
from tokenim.server.api.admin import build_admin_router
from tokenim.server.api.backup import build_backup_router
from tokenim.server.api.contract import install_openapi
from tokenim.server.api.errors import BodyLimitMiddleware, install_error_handlers, remember_routes
from tokenim.server.api.identity import build_identity_router
from tokenim.server.api.key_lifecycle import build_key_lifecycle_router
from tokenim.server.api.link import build_link_router
from tokenim.server.api.messaging import build_messaging_router
from tokenim.server.api.realtime import build_realtime_route
from tokenim.server.api.routes import Services, build_router, requester_dependency
from tokenim.server.api.security import build_security_router
from tokenim.server.api.two_factor import build_two_factor_router
from tokenim.server.config import Config, ServerConfig, as_config
from tokenim.server.jobs import Scheduler
from tokenim.server.mail import build_mailer
from tokenim.server.outbox import POLL_MS as OUTBOX_POLL_MS
from tokenim.server.outbox import Outbox
from tokenim.server.realtime.hub import Hub
from tokenim.server.secret_box import KEY_BYTES, SecretBox
from tokenim.server.services.accounts import AccountService
from tokenim.server.services.admin import AdminService
from tokenim.server.services.audit import Auditor
from tokenim.server.services.audit_events import AuditService
from tokenim.server.services.auth import AuthService
from tokenim.server.services.backup import BackupService
from tokenim.server.services.common import Context
from tokenim.server.services.devices import DeviceService
from tokenim.server.services.files import FileService
from tokenim.server.services.identity import IdentityService
from tokenim.server.services.keys import KeyService
from tokenim.server.services.limits import Limiter
from tokenim.server.services.link import LinkService
from tokenim.server.services.master_device import MasterDeviceService
from tokenim.server.services.membership import MembershipCache
from tokenim.server.services.messages import MessageService
from tokenim.server.services.notices import SecurityNotifier
from tokenim.server.services.rooms import RoomService
from tokenim.server.services.security import SecurityService
from tokenim.server.services.two_factor import TwoFactorService
from tokenim.server.services.writer import EventWriter
from tokenim.server.sms import build_sms_sender
from tokenim.server.storage.accounts import AccountStore
from tokenim.server.storage.audit import AuditStore
from tokenim.server.storage.auth import AuthStore
from tokenim.server.storage.backup import BackupStore
from tokenim.server.storage.database import Database
from tokenim.server.storage.events import EventStore
from tokenim.server.storage.identity import IdentityStore
from tokenim.server.storage.keys import OneTimeKeyStore
from tokenim.server.storage.rooms import RoomStore


def build_services(config: Config | ServerConfig, db: Database, clock: Clock, secret_box: SecretBox | None = None) -> Services:
    """Construct every service with exactly what it needs. `tokenim serve` passes the box under the server
    key (DATA/secret.key or `secret_key_file`); without one, a key in memory (tests: what it seals does not
    outlive the process)."""
    whole = as_config(config)
    server = whole.server
    ctx = Context(
        db=db,
        clock=clock,
        server_name=server.server_name,
        accounts=AccountStore(),
        keys=OneTimeKeyStore(),
        auth=AuthStore(),
        auditor=Auditor(AuditStore(), clock),
        identity=IdentityStore(),
        limiter=Limiter(db, clock, whole.limits.policies()),
    )
    box = secret_box or SecretBox.from_key(secrets.token_bytes(KEY_BYTES))
    two_factor = TwoFactorService(ctx, box)
    step_up = two_factor.require_second_factor
    accounts = AccountService(ctx, server.registration, step_up, key_rotation_days=server.key_rotation_days)
    hub, events, rooms = Hub(clock), EventStore(), RoomStore()
    members = MembershipCache(rooms)
    writer = EventWriter(db, events, rooms, hub, clock, on_rollback=members.clear)
    room_service = RoomService(ctx, rooms, writer, members)
    auth = AuthService(ctx, on_session_end=hub.close_session)
    outbox = Outbox(
        db,
        clock,
        box,
        ctx.auditor,
        mail=build_mailer(whole.email, server.server_name),
        sms=build_sms_sender(whole.sms),
        lease_ms=outbox_lease_ms(whole),
    )
    notices = SecurityNotifier(ctx, outbox)
    scheduler = Scheduler(clock)
    scheduler.every(Outbox.JOB, OUTBOX_POLL_MS, outbox.deliver_due)
    return Services(
        accounts=accounts,
        auth=auth,
        keys=KeyService(ctx, accounts, writer, room_service.announce_device, step_up, notices, hub.notify_keys_low),
        devices=DeviceService(ctx, writer, room_service.announce_device, step_up, on_removed=hub.close_device),
        identity=IdentityService(ctx, writer, room_service.announce_device, step_up, on_revoked=hub.close_device),
        rooms=room_service,
        messages=MessageService(ctx, rooms, events, writer, members),
        backup=BackupService(ctx, BackupStore(), step_up),
        files=FileService(ctx, server.data_dir / "blobs", server.max_upload_bytes, whole.limits.blob_quota_bytes),
        hub=hub,
        writer=writer,
        master_devices=MasterDeviceService(ctx, accounts, auth, writer, room_service.announce_device, step_up, notices),
        audit=AuditService(ctx),
        link=LinkService(ctx, server.link_policy, auth.access_requester),
        admin=AdminService(ctx),
        security=SecurityService(ctx),
        two_factor=two_factor,
        scheduler=scheduler,
        outbox=outbox,
        notices=notices,
    )


def outbox_lease_ms(config: Config) -> int:
    """How long a message being sent is kept from other senders: well beyond the slowest attempt."""
    slowest = max(config.email.smtp_timeout_seconds, config.sms.sms_timeout_seconds)
    return max(5 * 60 * 1000, int(slowest * 3 * 1000))


def build_app(config: Config | ServerConfig, db: Database, clock: Clock, services: Services | None = None) -> FastAPI:
    """The ASGI application. The database must already be migrated."""
    server = as_config(config).server
    services = services or build_services(config, db, clock)
    # No redirects: `/v1/rooms/` is not_found like any unknown path (a redirect would be built from the Host header).
    app = FastAPI(title="TokenIM", version=__version__, docs_url="/docs", openapi_url="/openapi.json", redirect_slashes=False)
    install_error_handlers(app)
    install_openapi(app)
    requester = requester_dependency(services.auth)
    routers = [
        build_router(services, server.server_name),
        build_messaging_router(services.rooms, services.messages, services.files, requester),
        build_identity_router(services.identity, requester),
        build_key_lifecycle_router(services.master_devices, services.audit, requester),
        build_backup_router(services.backup, requester),
        build_link_router(services.link, requester),
        build_admin_router(services.accounts, services.admin, requester),
        build_security_router(services.security, requester),
        build_two_factor_router(services.two_factor, requester),
    ]
    for router in routers:
        app.include_router(router)
    remember_routes(app, routers)
    app.router.routes.append(
        build_realtime_route(services.auth, services.messages, services.hub, server.max_websockets_per_device)
    )
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=server.max_body_bytes, overrides={("POST", "/v1/blobs"): server.max_upload_bytes}
    )
    app.state.services = services
    return app
