"""`client.verification`: verify people, by the safety number read out of band or by SAS (emoji).

The SAS steps are in the sans-I/O machine (crypto/sas.py); this module carries its messages as
Olm-encrypted to-device messages, fetches the peer's answers, asks the person to compare, and on success
records in the profile that the peer's master key (and device) was verified. docs/protocol.md,
"Safety numbers" and "Verifying people (SAS)", describes the wire side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tokenim.client.audit import Audit
from tokenim.client.contacts import digits
from tokenim.client.state import DeviceState
from tokenim.client.transport import Transport
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.limits import MAX_POSITION
from tokenim.crypto.olm import CryptoError
from tokenim.crypto.safety import safety_number
from tokenim.crypto.sas import CANCEL_REASONS, Outgoing, Party, SasState, SasVerification
from tokenim.crypto.verified import VerificationRecord, VerificationStatus, VerifiedBy, verification_status
from tokenim.protocol.api import KeysClaimResponse, OkResponse, SyncResponse
from tokenim.protocol.events import ENCRYPTED
from tokenim.protocol.keys import DeviceKeys, parse_one_time_keys

if TYPE_CHECKING:
    from tokenim.client.keys import Keys
    from tokenim.client.messages import Messages

SAFETY_NUMBER_DIGITS = 60
RECORD_KIND = "verification"  # profile records: user id -> VerificationRecord
POLL_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    """What `tokenim fingerprint @user` prints: the number for the key pinned for them, and whether the server
    now shows another key (then `current_safety_number` is the number for that one)."""

    user_id: str
    safety_number: str
    pinned_master: str
    current_master: str
    key_changed: bool
    current_safety_number: str | None
    verified: bool
    verified_by: str | None
    why_not: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SasShown:
    """The short authentication string to compare with the other person: 7 emoji with names, or 3 numbers."""

    user_id: str
    device_id: str
    emoji: list[dict[str, str]]
    decimals: list[int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """A finished SAS verification: whose master key and which device were verified."""

    user_id: str
    device_id: str
    master_key: str
    verified_by: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verified": True}


ConfirmSas = Callable[[SasShown], Awaitable[bool]]


def status_of(state: DeviceState, user_id: str) -> VerificationStatus:
    """Whether `user_id` is verified now (the one place that decides it: crypto/verified.py)."""
    raw = state.store.get_record(RECORD_KIND, user_id)
    record = VerificationRecord.from_bytes(raw) if raw is not None else None
    pin = state.machine.pins.get(user_id)
    return verification_status(user_id, record, pin.master_key if pin else None, pin.keys_followed if pin else ())


class Verification:
    """`client.verification`: safety numbers, marking a person verified, and interactive SAS verification."""

    def __init__(self, state: DeviceState, transport: Transport, keys: Keys, messages: Messages, audit: Audit) -> None:
        self._state = state
        self._transport = transport
        self._keys = keys
        self._messages = messages
        self._audit = audit

    def status(self, user: str) -> VerificationStatus:
        """Whether this person is verified by you now, and if not, why."""
        return status_of(self._state, self._state.full_user_id(user))

    async def safety_number(self, user: str) -> SafetyNumber:
        """The safety number of you and `user`, for the master key pinned for them (compare it out of band)."""
        user_id = self._other(user)
        contact = await self._keys.contact(user_id)
        mine = self._state.identity.master.public_key
        changed = contact.pinned_master != contact.current_master
        status = status_of(self._state, user_id)
        return SafetyNumber(
            user_id=user_id,
            safety_number=safety_number(self._state.user_id, mine, user_id, contact.pinned_master),
            pinned_master=contact.pinned_master,
            current_master=contact.current_master,
            key_changed=changed,
            current_safety_number=self._number_or_none(user_id, contact.current_master) if changed else None,
            verified=status.verified,
            verified_by=status.verified_by.value if status.verified_by else None,
            why_not=status.why_not,
        )

    def _number_or_none(self, user_id: str, their_master: str) -> str | None:
        """The safety number with a key the server shows, or None when that key is not a key at all."""
        try:
            return safety_number(self._state.user_id, self._state.identity.master.public_key, user_id, their_master)
        except ValueError:
            return None

    async def mark_verified(self, user: str, number: str) -> SafetyNumber:
        """Record `user` as verified after comparing the safety number: `number` must be the one shown for the
        pinned key (as read out by them), and the server must still show that key."""
        given = digits(number)
        if len(given) != SAFETY_NUMBER_DIGITS:
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"A safety number has {SAFETY_NUMBER_DIGITS} digits and {len(given)} were given: type the whole number "
                "they read you. Nothing was marked verified.",
            )
        shown = await self.safety_number(user)
        if shown.key_changed:
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"The server now shows another master key for {shown.user_id} than the one pinned: accept it first "
                f"(tokenim keys accept {shown.user_id}) or find out why; nothing was marked verified.",
            )
        if digits(number) != digits(shown.safety_number):
            raise TokenIMError(
                ErrorCode.FINGERPRINT_MISMATCH,
                f"That is not your safety number with {shown.user_id}: nothing was marked verified. Compare the number "
                f"`tokenim fingerprint {shown.user_id}` shows with the one they read to you, digit by digit; if they "
                "differ, someone may be in between.",
            )
        record = VerificationRecord(shown.user_id, shown.pinned_master, VerifiedBy.SAFETY_NUMBER, self._state.clock.now_ms())
        await self._save(record)
        return await self.safety_number(user)

    async def sas(
        self,
        user: str,
        confirm: ConfirmSas,
        *,
        poll_interval: float = POLL_INTERVAL_S,
        on_waiting: Callable[[str], None] | None = None,
    ) -> VerificationResult:
        """Verify `user` interactively: both people run this at about the same time, compare the emoji
        `confirm` is shown and answer it (True: they match). Raises `verification_failed` when either side
        cancels, a check fails or 10 minutes pass. On success their master key and device are recorded as
        verified. `on_waiting(user_id)` is called once every check passed, as the wait for the other side begins."""
        user_id = self._other(user)
        await self._keys.require_current_master(
            "verify people (they would see the old, rotated key and the verification would fail on both sides)"
        )
        contact = await self._keys.contact(user_id)
        if contact.pinned_master != contact.current_master:
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST,
                f"The server shows another master key for {user_id} than the one pinned: compare fingerprints and run "
                f"`tokenim keys accept {user_id}` first, then verify.",
            )
        devices: dict[str, DeviceKeys] = {d.device_id: d for d in await self._keys.devices_of([user_id])}
        if not devices:
            raise TokenIMError(ErrorCode.INVALID_REQUEST, f"{user_id} has no device signed by their master key to verify.")
        identity = self._state.identity
        me = Party(identity.user_id, identity.device_id, identity.ed25519, identity.master.public_key)
        if on_waiting is not None:
            on_waiting(user_id)
        run = _SasRun(
            self,
            SasVerification(me, user_id, contact.pinned_master, {d: k.ed25519 for d, k in devices.items()}, self._now()),
            devices,
        )
        return await run.go(confirm, poll_interval)

    # ---- carrying messages -------------------------------------------------------------------

    def _now(self) -> int:
        return self._state.clock.now_ms()

    def _other(self, user: str) -> str:
        user_id = self._state.full_user_id(user)
        if user_id == self._state.user_id:
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST, "That is you: verify other people (your own devices trust your master key)."
            )
        return user_id

    async def _save(self, record: VerificationRecord) -> None:
        """Keep the verification in the profile, then file it in the user's audit record. The verification
        stands even when the server can't take the record now: it was made between the two people."""
        self._state.persist(records={RECORD_KIND: {record.user_id: record.to_bytes()}})
        with contextlib.suppress(TokenIMError):
            await self._audit.record("person.verified", peer=record.user_id, method=record.method.value)

    async def _fetch(self) -> None:
        """Fetch pending to-device messages only (a `since` past the head returns no events), decrypt and acknowledge
        them: room keys are kept as by sync, verification messages land in the machine's inbox."""
        after = int(self._state.store.get_meta("to_device_after") or 0)
        page = await self._transport.request(
            "GET", f"/v1/sync?since={MAX_POSITION}&to_device_after={after}&limit=1", SyncResponse
        )
        if page.to_device:
            highest = await self._messages.process_to_device(page.to_device)
            await self._transport.post("/v1/to_device/ack", {"up_to": highest}, OkResponse)
            self._state.store.set_meta({"to_device_after": str(highest)})

    async def _send(self, messages: list[Outgoing], devices: dict[str, DeviceKeys]) -> None:
        """Olm-encrypt each message for its device (or every device of the peer), opening sessions if needed."""
        for out in messages:
            targets = [devices[out.device_id]] if out.device_id is not None else list(devices.values())
            await self._open_sessions(targets)
            machine = self._state.machine
            by_device = {
                d.device_id: machine.olm.encrypt(d, out.type, out.content) for d in targets if machine.olm.has_session(d)
            }
            if not by_device:
                continue
            user_id = targets[0].user_id
            async with self._state.numbered_send() as seq:  # the advanced Olm ratchets are saved with the number
                body = {"type": ENCRYPTED, "messages": {user_id: by_device}, "device_seq": seq}
                await self._state.sending(self._transport.post("/v1/to_device", body, OkResponse))

    async def _open_sessions(self, targets: list[DeviceKeys]) -> None:
        machine = self._state.machine
        missing = [d for d in targets if not machine.olm.has_session(d)]
        if not missing:
            return
        wanted: dict[str, list[str]] = {}
        for d in missing:
            wanted.setdefault(d.user_id, []).append(d.device_id)
        resp = await self._transport.post("/v1/keys/claim", {"devices": wanted}, KeysClaimResponse)
        for d in missing:
            got = resp.one_time_keys.get(d.user_id, {}).get(d.device_id)
            if got is None:
                continue
            try:  # a key not signed by its device (a server's forgery) opens no session
                otk = parse_one_time_keys({got.key_id: got.key}, fallback=bool(got.key.get("fallback")))[0]
                machine.start_session(d, otk)
            except (TokenIMError, CryptoError, ValueError):
                continue


class _SasRun:
    """One `sas()` call: feeds the machine, sends what it says, asks the person, until it is over."""

    def __init__(self, owner: Verification, sas: SasVerification, devices: dict[str, DeviceKeys]) -> None:
        self.owner = owner
        self.sas = sas
        self.devices = devices

    async def go(self, confirm: ConfirmSas, poll_interval: float) -> VerificationResult:
        owner, sas = self.owner, self.sas
        question: asyncio.Task[bool] | None = None
        try:
            await owner._fetch()  # a request the peer sent before we started is answered, not crossed
            await self._step()
            await owner._send(sas.request(owner._now()), self.devices)
            while not sas.finished:
                if sas.state is SasState.SHOWING and question is None:
                    assert sas.sas is not None and sas.their_device is not None
                    emoji = [{"emoji": e, "name": n} for e, n in sas.sas.emoji]
                    shown = SasShown(sas.their_user, sas.their_device, emoji, list(sas.sas.decimals))
                    question = asyncio.ensure_future(confirm(shown))
                if question is not None and question.done() and sas.state is SasState.SHOWING:
                    answer = question.result()
                    await owner._send(sas.confirm(owner._now()) if answer else sas.mismatch(owner._now()), self.devices)
                    continue
                await asyncio.sleep(poll_interval)
                await owner._fetch()
                await self._step()
        except BaseException:
            await self._cancel_quietly()
            raise
        finally:
            if question is not None and not question.done():
                question.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await question
        return await self._result()

    async def _step(self) -> None:
        """Feed the machine what arrived from the peer (and the time), and send its answers."""
        owner, sas = self.owner, self.sas
        machine = owner._state.machine
        inbox, machine.verification_inbox = machine.verification_inbox, []
        out: list[Outgoing] = []
        for payload in inbox:
            if payload.sender == sas.their_user:
                out += sas.receive(payload.sender_device, payload.type, payload.content, owner._now())
        out += sas.tick(owner._now())
        await owner._send(out, self.devices)

    async def _cancel_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self.owner._send(self.sas.cancel(), self.devices))

    async def _result(self) -> VerificationResult:
        sas = self.sas
        if sas.state is not SasState.VERIFIED:
            code = sas.cancel_code
            reason = CANCEL_REASONS[code] if code else "The verification did not finish."
            who = "The other person's device cancelled" if sas.cancelled_by_them else "Cancelled"
            raise TokenIMError(
                ErrorCode.VERIFICATION_FAILED,
                f"{who}: {reason} {sas.their_user} is not verified.",
                details={"cancel_code": code.value if code else None, "by": "them" if sas.cancelled_by_them else "you"},
            )
        assert sas.their_device is not None
        record = VerificationRecord(
            sas.their_user,
            sas.their_master,
            VerifiedBy.SAS,
            self.owner._now(),
            sas.their_device,
            sas.their_devices[sas.their_device],
        )
        await self.owner._save(record)
        return VerificationResult(sas.their_user, sas.their_device, sas.their_master, VerifiedBy.SAS.value)


__all__ = ["SafetyNumber", "SasShown", "Verification", "VerificationResult", "status_of"]
