"""Short authentication string (SAS) verification between two people's devices, as a sans-I/O state machine.

Modelled on Matrix's m.sas.v1 (request, ready, start, accept with a commitment, key, mac, done, cancel),
with vodozemac's `Sas` for the X25519 agreement, the SAS bytes and the MACs. The machine takes the
messages the peer sent and the current time, and returns what to send next; the SDK carries them as
Olm-encrypted to-device messages (client/verification.py). docs/protocol.md, "Verifying people (SAS)",
describes every message. Both people compare 7 emoji (or 3 numbers); after both confirm, each device
MACs its own device key and its user's master key, so a match proves both keys, and any mismatch cancels.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import vodozemac

from tokenim.core.canonical import canonical_json
from tokenim.core.encoding import b64encode

PREFIX = "tokenim.verification."
REQUEST, READY, START, ACCEPT = (PREFIX + t for t in ("request", "ready", "start", "accept"))
KEY, MAC, DONE, CANCEL = (PREFIX + t for t in ("key", "mac", "done", "cancel"))
TYPES = frozenset({REQUEST, READY, START, ACCEPT, KEY, MAC, DONE, CANCEL})
METHOD = "tokenim.sas.v1"
KEY_AGREEMENT = "curve25519-hkdf-sha256"
HASH = "sha256"
MAC_METHOD = "hkdf-hmac-sha256.v2"
SAS_KINDS = ["decimal", "emoji"]
TIMEOUT_MS = 10 * 60 * 1000  # the whole verification, from the request (Matrix: 10 minutes)
REQUEST_FUTURE_MS = 5 * 60 * 1000  # a request dated further ahead than this is ignored

# Matrix's SAS emoji table (the spec's sas-emoji.json), index -> (emoji, name).
EMOJI: tuple[tuple[str, str], ...] = (
    ("🐶", "Dog"), ("🐱", "Cat"), ("🦁", "Lion"), ("🐎", "Horse"), ("🦄", "Unicorn"), ("🐷", "Pig"),
    ("🐘", "Elephant"), ("🐰", "Rabbit"), ("🐼", "Panda"), ("🐓", "Rooster"), ("🐧", "Penguin"),
    ("🐢", "Turtle"), ("🐟", "Fish"), ("🐙", "Octopus"), ("🦋", "Butterfly"), ("🌷", "Flower"),
    ("🌳", "Tree"), ("🌵", "Cactus"), ("🍄", "Mushroom"), ("🌏", "Globe"), ("🌙", "Moon"),
    ("☁️", "Cloud"), ("🔥", "Fire"), ("🍌", "Banana"), ("🍎", "Apple"), ("🍓", "Strawberry"),
    ("🌽", "Corn"), ("🍕", "Pizza"), ("🎂", "Cake"), ("❤️", "Heart"), ("😀", "Smiley"), ("🤖", "Robot"),
    ("🎩", "Hat"), ("👓", "Glasses"), ("🔧", "Spanner"), ("🎅", "Santa"), ("👍", "Thumbs Up"),
    ("☂️", "Umbrella"), ("⌛", "Hourglass"), ("⏰", "Clock"), ("🎁", "Gift"), ("💡", "Light Bulb"),
    ("📕", "Book"), ("✏️", "Pencil"), ("📎", "Paperclip"), ("✂️", "Scissors"), ("🔒", "Lock"),
    ("🔑", "Key"), ("🔨", "Hammer"), ("☎️", "Telephone"), ("🏁", "Flag"), ("🚂", "Train"),
    ("🚲", "Bicycle"), ("✈️", "Aeroplane"), ("🚀", "Rocket"), ("🏆", "Trophy"), ("⚽", "Ball"),
    ("🎸", "Guitar"), ("🎺", "Trumpet"), ("🔔", "Bell"), ("⚓", "Anchor"), ("🎧", "Headphones"),
    ("📁", "Folder"), ("📌", "Pin"),
)  # fmt: skip


class CancelCode(StrEnum):
    """Why a verification was cancelled (Matrix's codes)."""

    USER = "m.user"
    TIMEOUT = "m.timeout"
    UNKNOWN_METHOD = "m.unknown_method"
    UNEXPECTED_MESSAGE = "m.unexpected_message"
    KEY_MISMATCH = "m.key_mismatch"
    INVALID_MESSAGE = "m.invalid_message"
    MISMATCHED_COMMITMENT = "m.mismatched_commitment"
    MISMATCHED_SAS = "m.mismatched_sas"


CANCEL_REASONS = {
    CancelCode.USER: "The verification was cancelled.",
    CancelCode.TIMEOUT: "The verification timed out.",
    CancelCode.UNKNOWN_METHOD: "The other device offered no method this device knows.",
    CancelCode.UNEXPECTED_MESSAGE: "A verification message came out of order.",
    CancelCode.KEY_MISMATCH: "The keys the other device vouched for are not the keys shown here.",
    CancelCode.INVALID_MESSAGE: "A verification message was malformed.",
    CancelCode.MISMATCHED_COMMITMENT: "The other device's key does not match its commitment.",
    CancelCode.MISMATCHED_SAS: "The emoji (or numbers) did not match.",
}


class SasState(StrEnum):
    NEW = "new"
    REQUESTED = "requested"  # we asked; waiting for `ready`
    READY = "ready"  # we answered a request; waiting for `start`
    STARTED = "started"  # we sent `start`; waiting for `accept`
    ACCEPTED = "accepted"  # we sent `accept`; waiting for the starter's key
    KEY_SENT = "key_sent"  # the starter sent its key; waiting for the other key
    SHOWING = "showing"  # both keys known: the people compare the SAS
    CONFIRMED = "confirmed"  # our person confirmed and our MAC is sent; waiting for theirs
    DONE_SENT = "done_sent"  # their MAC checked, `done` sent; waiting for theirs
    VERIFIED = "verified"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Party:
    """One side: the user, the device, the device's Ed25519 key and the user's master key."""

    user_id: str
    device_id: str
    device_ed25519: str
    master_key: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A verification message to send; `device_id` None means every device of the peer (a request)."""

    type: str
    content: dict[str, Any]
    device_id: str | None


@dataclass(frozen=True, slots=True)
class Sas:
    """What the people compare: 7 emoji (symbol, name) and 3 numbers from 1000 to 9191."""

    emoji: tuple[tuple[str, str], ...]
    decimals: tuple[int, int, int]


class SasVerification:
    """One verification of `their_user` from this device (`me`), requester or responder.

    `their_master` is the master key this device holds for them, `their_devices` their devices' Ed25519
    keys (device id -> key) as verified under it. Feed `receive` every verification message the peer's
    devices send, call `tick` now and then for the timeout, and `confirm`/`mismatch` with the person's answer.
    """

    def __init__(self, me: Party, their_user: str, their_master: str, their_devices: Mapping[str, str], now: int) -> None:
        self.me = me
        self.their_user = their_user
        self.their_master = their_master
        self.their_devices = dict(their_devices)
        self.their_device: str | None = None
        self.state = SasState.NEW
        self.created_at = now
        self.txn = ""
        self.request_ts = now
        self.we_start = False
        self.cancel_code: CancelCode | None = None
        self.cancelled_by_them = False
        self._sas = vodozemac.Sas()
        self._our_key = str(self._sas.public_key.to_base64())
        self._start_content: dict[str, Any] | None = None
        self._commitment: str | None = None
        self._established: Any = None
        self._their_key: str | None = None
        self._their_mac: dict[str, Any] | None = None
        self._their_done = False
        self.sas: Sas | None = None

    # ---- actions -----------------------------------------------------------------------------

    def request(self, now: int) -> list[Outgoing]:
        """Ask every device of the peer to verify (unless a request of theirs was already answered)."""
        if self.state is not SasState.NEW:
            return []
        self.txn, self.request_ts, self.we_start, self.state = secrets.token_urlsafe(16), now, True, SasState.REQUESTED
        return [Outgoing(REQUEST, self._request_content(), None)]

    def confirm(self, now: int) -> list[Outgoing]:
        """Our person says the SAS match: send our MAC, and check theirs if it is already here."""
        if (out := self.tick(now)) or self.state is not SasState.SHOWING:
            return out
        self.state = SasState.CONFIRMED
        return [self._send(MAC, self._mac_content()), *self._check_their_mac()]

    def mismatch(self, now: int) -> list[Outgoing]:
        """Our person says the SAS differ: cancel."""
        return self.cancel(CancelCode.MISMATCHED_SAS)

    def cancel(self, code: CancelCode = CancelCode.USER) -> list[Outgoing]:
        """Give up, telling the peer why (unless it is already over)."""
        if self.state in (SasState.VERIFIED, SasState.CANCELLED):
            return []
        self.state, self.cancel_code = SasState.CANCELLED, code
        if not self.txn:
            return []
        return [
            Outgoing(CANCEL, {"transaction_id": self.txn, "code": code.value, "reason": CANCEL_REASONS[code]}, self.their_device)
        ]

    def tick(self, now: int) -> list[Outgoing]:
        """Cancel with m.timeout once the verification is older than TIMEOUT_MS."""
        if self.state not in (SasState.VERIFIED, SasState.CANCELLED) and now - self.created_at > TIMEOUT_MS:
            return self.cancel(CancelCode.TIMEOUT)
        return []

    @property
    def finished(self) -> bool:
        return self.state in (SasState.VERIFIED, SasState.CANCELLED)

    # ---- messages in -------------------------------------------------------------------------

    def receive(self, sender_device: str, msg_type: str, content: Any, now: int) -> list[Outgoing]:
        """One verification message from `sender_device` of the peer. Returns what to send next."""
        if (out := self.tick(now)) or self.finished:
            return out
        if msg_type not in TYPES or not isinstance(content, dict) or sender_device not in self.their_devices:
            return []
        if msg_type == REQUEST:
            return self._on_request(sender_device, content, now)
        if content.get("transaction_id") != self.txn or not self.txn:
            return []  # another verification's message (an old one, or for another device)
        if self.their_device is not None and sender_device != self.their_device:
            return []
        if msg_type == CANCEL:
            self.state, self.cancelled_by_them = SasState.CANCELLED, True
            code = content.get("code")
            self.cancel_code = next((c for c in CancelCode if c.value == code), CancelCode.USER)
            return []
        handler = {
            READY: self._on_ready,
            START: self._on_start,
            ACCEPT: self._on_accept,
            KEY: self._on_key,
            MAC: self._on_mac,
            DONE: self._on_done,
        }[msg_type]
        try:
            return handler(sender_device, content)
        except (KeyError, TypeError, ValueError):
            return self.cancel(CancelCode.INVALID_MESSAGE)

    def _on_request(self, device: str, content: dict[str, Any], now: int) -> list[Outgoing]:
        txn, ts = content.get("transaction_id"), content.get("timestamp")
        if not isinstance(txn, str) or not txn or not isinstance(ts, int) or content.get("from_device") != device:
            return []
        if now - ts > TIMEOUT_MS or ts - now > REQUEST_FUTURE_MS or METHOD not in (content.get("methods") or []):
            return []
        if self.state is SasState.REQUESTED:
            if self.their_user > self.me.user_id:
                # Requests crossed and ours wins (the smaller user id): make sure that device has it.
                return [Outgoing(REQUEST, self._request_content(), device)]
        elif self.state is SasState.READY:
            if txn == self.txn or ts < self.request_ts:
                return []  # the same request again, or an older one: a newer request replaces an older one
        elif self.state is not SasState.NEW:
            return []
        self.txn, self.request_ts, self.we_start = txn, ts, False
        self.their_device, self.state = device, SasState.READY
        return [self._send(READY, {"transaction_id": txn, "from_device": self.me.device_id, "methods": [METHOD]})]

    def _on_ready(self, device: str, content: dict[str, Any]) -> list[Outgoing]:
        if self.state is not SasState.REQUESTED:
            return self.cancel(CancelCode.UNEXPECTED_MESSAGE) if self.their_device == device else []
        if content.get("from_device") != device or METHOD not in content["methods"]:
            self.their_device = device
            return self.cancel(CancelCode.UNKNOWN_METHOD)
        self.their_device, self.state = device, SasState.STARTED
        self._start_content = {
            "transaction_id": self.txn,
            "from_device": self.me.device_id,
            "method": METHOD,
            "key_agreement_protocols": [KEY_AGREEMENT],
            "hashes": [HASH],
            "message_authentication_codes": [MAC_METHOD],
            "short_authentication_string": SAS_KINDS,
        }
        return [self._send(START, self._start_content)]

    def _on_start(self, device: str, content: dict[str, Any]) -> list[Outgoing]:
        if self.state is not SasState.READY:
            return self.cancel(CancelCode.UNEXPECTED_MESSAGE)
        if content.get("from_device") != device or content.get("method") != METHOD:
            return self.cancel(CancelCode.UNKNOWN_METHOD)
        offered = [
            KEY_AGREEMENT in content["key_agreement_protocols"],
            HASH in content["hashes"],
            MAC_METHOD in content["message_authentication_codes"],
            "emoji" in content["short_authentication_string"] or "decimal" in content["short_authentication_string"],
        ]
        if not all(offered):
            return self.cancel(CancelCode.UNKNOWN_METHOD)
        self._start_content, self.state = content, SasState.ACCEPTED
        accept = {
            "transaction_id": self.txn,
            "method": METHOD,
            "key_agreement_protocol": KEY_AGREEMENT,
            "hash": HASH,
            "message_authentication_code": MAC_METHOD,
            "short_authentication_string": SAS_KINDS,
            "commitment": commitment(self._our_key, content),
        }
        return [self._send(ACCEPT, accept)]

    def _on_accept(self, device: str, content: dict[str, Any]) -> list[Outgoing]:
        if self.state is not SasState.STARTED:
            return self.cancel(CancelCode.UNEXPECTED_MESSAGE)
        chosen = (content["key_agreement_protocol"], content["hash"], content["message_authentication_code"])
        if chosen != (KEY_AGREEMENT, HASH, MAC_METHOD) or content.get("method") != METHOD:
            return self.cancel(CancelCode.UNKNOWN_METHOD)
        if not isinstance(content["commitment"], str):
            return self.cancel(CancelCode.INVALID_MESSAGE)
        self._commitment, self.state = content["commitment"], SasState.KEY_SENT
        return [self._send(KEY, {"transaction_id": self.txn, "key": self._our_key})]

    def _on_key(self, device: str, content: dict[str, Any]) -> list[Outgoing]:
        their_key = content["key"]
        if not isinstance(their_key, str):
            return self.cancel(CancelCode.INVALID_MESSAGE)
        if self.state is SasState.KEY_SENT:  # we started: their key must be the one they committed to
            assert self._start_content is not None
            if not secrets.compare_digest(commitment(their_key, self._start_content), self._commitment or ""):
                return self.cancel(CancelCode.MISMATCHED_COMMITMENT)
            out: list[Outgoing] = []
        elif self.state is SasState.ACCEPTED:
            out = [self._send(KEY, {"transaction_id": self.txn, "key": self._our_key})]
        else:
            return self.cancel(CancelCode.UNEXPECTED_MESSAGE)
        try:
            self._established = self._sas.diffie_hellman(vodozemac.Curve25519PublicKey.from_base64(their_key))
        except ValueError:
            return self.cancel(CancelCode.INVALID_MESSAGE)
        self._their_key, self.state = their_key, SasState.SHOWING
        sas_bytes = self._established.bytes(self._sas_info())
        emoji = tuple(EMOJI[i] for i in bytes(sas_bytes.emoji_indices))  # 7 indices of 6 bits each
        first, second, third = sas_bytes.decimals
        self.sas = Sas(emoji=emoji, decimals=(int(first), int(second), int(third)))
        return out

    def _on_mac(self, device: str, content: dict[str, Any]) -> list[Outgoing]:
        if self.state not in (SasState.SHOWING, SasState.CONFIRMED) or self._their_mac is not None:
            return self.cancel(CancelCode.UNEXPECTED_MESSAGE)
        if not isinstance(content["mac"], dict) or not isinstance(content["keys"], str):
            return self.cancel(CancelCode.INVALID_MESSAGE)
        self._their_mac = content
        return self._check_their_mac() if self.state is SasState.CONFIRMED else []

    def _on_done(self, device: str, content: dict[str, Any]) -> list[Outgoing]:
        if self.state not in (SasState.CONFIRMED, SasState.DONE_SENT):
            return self.cancel(CancelCode.UNEXPECTED_MESSAGE)
        self._their_done = True
        if self.state is SasState.DONE_SENT:
            self.state = SasState.VERIFIED
        return []

    # ---- MACs --------------------------------------------------------------------------------

    def _mac_info(self, sender: Party | tuple[str, str], receiver: tuple[str, str]) -> str:
        user, device = (sender.user_id, sender.device_id) if isinstance(sender, Party) else sender
        return f"TOKENIM_SAS_MAC_V1|{user}|{device}|{receiver[0]}|{receiver[1]}|{self.txn}"

    def _mac_content(self) -> dict[str, Any]:
        assert self._established is not None and self.their_device is not None
        info = self._mac_info(self.me, (self.their_user, self.their_device))
        keys = {f"ed25519:{self.me.device_id}": self.me.device_ed25519, f"ed25519:{self.me.master_key}": self.me.master_key}
        mac = {key_id: self._established.calculate_mac(value, f"{info}|{key_id}") for key_id, value in keys.items()}
        key_ids = ",".join(sorted(keys))
        return {"transaction_id": self.txn, "mac": mac, "keys": self._established.calculate_mac(key_ids, f"{info}|KEY_IDS")}

    def _check_their_mac(self) -> list[Outgoing]:
        """Their MAC must cover exactly their device key and the master key we hold for them."""
        if self._their_mac is None:
            return []
        assert self._established is not None and self.their_device is not None
        info = self._mac_info((self.their_user, self.their_device), (self.me.user_id, self.me.device_id))
        expected = {
            f"ed25519:{self.their_device}": self.their_devices[self.their_device],
            f"ed25519:{self.their_master}": self.their_master,
        }
        mac = self._their_mac["mac"]
        try:
            self._established.verify_mac(",".join(sorted(mac)), f"{info}|KEY_IDS", str(self._their_mac["keys"]))
            if set(mac) != set(expected):
                return self.cancel(CancelCode.KEY_MISMATCH)
            for key_id, value in expected.items():
                self._established.verify_mac(value, f"{info}|{key_id}", str(mac[key_id]))
        except ValueError:  # vodozemac.SasException: a MAC over another key, or under another secret
            return self.cancel(CancelCode.KEY_MISMATCH)
        self.state = SasState.VERIFIED if self._their_done else SasState.DONE_SENT
        return [self._send(DONE, {"transaction_id": self.txn})]

    # ---- helpers -----------------------------------------------------------------------------

    def _send(self, msg_type: str, content: dict[str, Any]) -> Outgoing:
        return Outgoing(msg_type, content, self.their_device)

    def _request_content(self) -> dict[str, Any]:
        return {"transaction_id": self.txn, "from_device": self.me.device_id, "methods": [METHOD], "timestamp": self.request_ts}

    def _sas_info(self) -> str:
        assert self.their_device is not None and self._their_key is not None
        them = (self.their_user, self.their_device, self._their_key)
        me = (self.me.user_id, self.me.device_id, self._our_key)
        starter, accepter = (me, them) if self.we_start else (them, me)
        return "TOKENIM_SAS_V1|" + "|".join([*starter, *accepter, self.txn])


def commitment(key: str, start_content: dict[str, Any]) -> str:
    """The accepting device's commitment: SHA-256 of its SAS public key and the canonical JSON of `start`."""
    return b64encode(hashlib.sha256(key.encode() + canonical_json(start_content)).digest())


__all__ = [
    "CANCEL",
    "EMOJI",
    "METHOD",
    "PREFIX",
    "TIMEOUT_MS",
    "TYPES",
    "CancelCode",
    "Outgoing",
    "Party",
    "Sas",
    "SasState",
    "SasVerification",
    "commitment",
]
