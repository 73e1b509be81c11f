"""Publishing, querying and claiming keys. The server checks signatures and relays the objects as signed."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import check_device_id, check_user_id
from tokenim.core.limits import MAX_DEVICES_PER_USER, MAX_ONE_TIME_KEYS_PER_UPLOAD, MAX_ONE_TIME_KEYS_STORED, ONE_TIME_KEY_TARGET
from tokenim.protocol.api import ClaimedKey, KeyCountsResponse, KeysClaimResponse, KeysQueryResponse, UserKeys
from tokenim.protocol.keys import (
    ONE_TIME_KEY_ALGORITHM,
    DeviceKeys,
    parse_device_keys,
    parse_master_key,
    parse_one_time_keys,
    verify_one_time_key,
)
from tokenim.server.services.accounts import AccountService, check_new_device
from tokenim.server.services.common import Context, Requester, SecondFactor, refuse_revoked_keys
from tokenim.server.services.limits import Kind
from tokenim.server.services.notices import NoticeKind, SecurityNotifier
from tokenim.server.services.writer import AnnounceDevice, Batch, EventWriter
from tokenim.server.storage.database import Tx


class KeyService:
    """One-time keys, fallback keys, key queries and atomic claims."""

    def __init__(
        self,
        ctx: Context,
        accounts: AccountService,
        writer: EventWriter,
        announce: AnnounceDevice,
        second_factor: SecondFactor,
        notices: SecurityNotifier,
        notify_keys_low: Callable[[str, str], None] = lambda _user, _device: None,
    ) -> None:
        self._notify_keys_low = notify_keys_low
        self._second_factor = second_factor
        self._notices = notices
        self._ctx = ctx
        self._accounts = accounts
        self._writer = writer
        self._announce = announce

    async def _device_keys(self, tx: Tx, requester: Requester):  # type: ignore[no-untyped-def]
        row = await self._ctx.accounts.get_device(tx, requester.user_id, requester.device_id)
        if row is None:
            raise TokenIMError(ErrorCode.UNKNOWN_DEVICE, "This device has been removed.")
        return parse_device_keys(row.keys)

    async def do_upload(self, requester: Requester, otks_raw: object, fallback_raw: object) -> KeyCountsResponse:
        """Publish signed one-time keys and (optionally) a new fallback key; re-sending the same key is harmless."""
        otks = parse_one_time_keys(otks_raw, fallback=False)
        fallbacks = parse_one_time_keys(fallback_raw, fallback=True)
        if len(otks) > MAX_ONE_TIME_KEYS_PER_UPLOAD or len(fallbacks) > 1:
            raise TokenIMError(
                ErrorCode.TOO_MANY_KEYS,
                f"Upload at most {MAX_ONE_TIME_KEYS_PER_UPLOAD} one-time keys and one fallback key at once.",
            )
        now = self._ctx.clock.now_ms()
        uid, did = requester.user_id, requester.device_id
        async with self._ctx.db.write() as tx:
            device = await self._device_keys(tx, requester)
            for k in otks + fallbacks:
                verify_one_time_key(k, device)
            existing = await self._ctx.keys.existing_key_ids(tx, uid, did, [k.key_id for k in otks + fallbacks])
            fresh = []
            for k in otks + fallbacks:
                if (k.fallback, k.key_id) in existing:
                    if json.loads(existing[(k.fallback, k.key_id)]) != k.raw:
                        raise TokenIMError(
                            ErrorCode.KEY_CONFLICT, f"Key id {k.key_id} was already published with a different key."
                        )
                    continue
                fresh.append(k)
            count, _ = await self._ctx.keys.count_unclaimed(tx, uid, did)
            if count + sum(not k.fallback for k in fresh) > MAX_ONE_TIME_KEYS_STORED:
                raise TokenIMError(
                    ErrorCode.TOO_MANY_KEYS, f"A device may keep at most {MAX_ONE_TIME_KEYS_STORED} one-time keys on the server."
                )
            if any(k.fallback for k in fresh):
                await self._ctx.keys.replace_fallback(tx, uid, did)
            await self._ctx.keys.insert_keys(tx, uid, did, [(k.key_id, k.raw, k.fallback) for k in fresh], now)
            count, has_fallback = await self._ctx.keys.count_unclaimed(tx, uid, did)
        return KeyCountsResponse(one_time_keys=count, has_fallback_key=has_fallback)

    async def access_counts(self, requester: Requester) -> KeyCountsResponse:
        """How many one-time keys this device has left, so the client knows when to replenish."""
        async with self._ctx.db.read() as tx:
            count, has_fallback = await self._ctx.keys.count_unclaimed(tx, requester.user_id, requester.device_id)
        return KeyCountsResponse(one_time_keys=count, has_fallback_key=has_fallback)

    async def access_query(self, user_ids: list[str]) -> KeysQueryResponse:
        """Each user's current master key, the chain of rotations that leads to it, their revocations and
        signed device keys, as stored; clients verify them all again."""
        wanted = sorted({check_user_id(u) for u in user_ids})
        async with self._ctx.db.read() as tx:
            masters = await self._ctx.accounts.current_master_keys(tx, list(wanted))
            devices = await self._ctx.accounts.list_devices(tx, list(masters))
            rotations = await self._ctx.identity.rotations(tx, list(masters))
            revocations = await self._ctx.identity.revocations(tx, list(masters))
        users = {
            uid: UserKeys(master_key=mk, devices={}, rotations=rotations.get(uid, []), revocations=revocations.get(uid, []))
            for uid, mk in masters.items()
        }
        for d in devices:
            users[d.user_id].devices[d.device_id] = d.keys
        return KeysQueryResponse(users=users, unknown=[u for u in wanted if u not in masters])

    async def do_claim(self, devices: dict[str, list[str]], requester: Requester) -> KeysClaimResponse:
        """Claim one one-time key per requested device; each key is handed out at most once. Each device asked
        for counts toward the requester's `key_claims_per_minute` (a refused claim takes nothing)."""
        asked = [(check_user_id(u), check_device_id(d)) for u, ds in devices.items() for d in ds]
        if len(asked) > 1000:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, "Claim keys for at most 1,000 devices at once.")
        wanted = list(dict.fromkeys(asked))
        out: dict[str, dict[str, ClaimedKey]] = {}
        running_low = []
        async with self._ctx.db.write() as tx:
            await self._ctx.limiter.hit(tx, Kind.KEY_CLAIM, user_id=requester.user_id, amount=len(wanted))
            for uid, did in wanted:
                claimed = await self._ctx.keys.claim(tx, uid, did)
                if claimed is not None:
                    # The id in the form it was uploaded in: the map key `signed_curve25519:<id>`.
                    full_id = f"{ONE_TIME_KEY_ALGORITHM}:{claimed.key_id}"
                    out.setdefault(uid, {})[did] = ClaimedKey(key_id=full_id, key=claimed.key)
                    left, has_fallback = await self._ctx.keys.count_unclaimed(tx, uid, did)
                    if left < ONE_TIME_KEY_TARGET // 2 or not has_fallback:
                        running_low.append((uid, did))
        for uid, did in running_low:  # after commit: connected devices top up at once
            self._notify_keys_low(uid, did)
        return KeysClaimResponse(one_time_keys=out)

    async def do_add_device(
        self, requester: Requester, device_raw: object, otks_raw: object, fallback_raw: object, otp: str | None = None
    ) -> None:
        """Add another device to the requester's account: its keys must be signed by the current master key,
        and neither its id nor its keys revoked; with 2FA on, `otp` must be a current code. The device, its
        audit record and its `device_list` event commit together, with the mail telling the user of the new
        device (queued, sent after commit)."""

        async def job(b: Batch) -> DeviceKeys:
            await self._second_factor(b.tx, requester, otp, b.now)
            masters = await self._ctx.accounts.current_master_keys(b.tx, [requester.user_id])
            master = parse_master_key(masters[requester.user_id])
            device, otks = check_new_device(master, device_raw, otks_raw, fallback_raw)
            await refuse_revoked_keys(self._ctx, b.tx, device)
            if await self._ctx.accounts.get_device(b.tx, device.user_id, device.device_id) is not None:
                raise TokenIMError(ErrorCode.DEVICE_EXISTS, f"Device {device.device_id} already exists.")
            if await self._ctx.accounts.count_devices(b.tx, requester.user_id) >= MAX_DEVICES_PER_USER:
                raise TokenIMError(ErrorCode.TOO_MANY_KEYS, f"An account may have at most {MAX_DEVICES_PER_USER} devices.")
            await self._accounts.insert_device(b.tx, device, otks, b.now)
            await self._ctx.auditor.record(
                b.tx, "device.added", requester.user_id, device.device_id, by_device=requester.device_id
            )
            await self._announce(b, requester.user_id, device.device_id, "added")
            details = {"device_id": device.device_id, "by_device": requester.device_id, "method": "device"}
            await self._notices.notify(b.tx, requester.user_id, NoticeKind.NEW_DEVICE, details)
            return device

        try:
            await self._writer.submit(job)
        except IntegrityError:  # a race with another add of the same device or the same keys
            raise TokenIMError(
                ErrorCode.KEY_CONFLICT, "The device or its keys were added by another request at the same moment."
            ) from None
