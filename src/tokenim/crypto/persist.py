"""Turning the crypto machine's state into records for the encrypted profile, and back.

Only what changed since the last export is written. vodozemac pickles are encrypted under the
profile's pickle key; the profile encrypts every record once more at rest.
"""

from __future__ import annotations

import json
from typing import Any

import vodozemac

from tokenim.crypto.machine import CryptoMachine
from tokenim.crypto.megolm import InboundSession, OutboundSession
from tokenim.crypto.trust import Pin

Records = dict[str, dict[str, bytes | None]]
# Revoked keys saved in one set for every user, before they were kept per user (`revoked`: user id -> keys).
# Nobody can tell whose device such a key was, and a forged revocation could have put a victim's key there:
# they are never applied, and are deleted on the next save (the revocations come again with the next query).
LEGACY_REVOKED = "revoked_key"
KINDS = ("olm_session", "outbound", "inbound", "seen", "pin", "revoked", LEGACY_REVOKED)
LEGACY_PIN = "pinned_master"  # a pin saved before versions were kept: the bare key, of version 1


def _j(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def export_changes(m: CryptoMachine, key: bytes) -> Records:
    """Records for everything that changed; clears the change marks."""
    out: Records = {kind: {} for kind in KINDS}
    for sender_key, sessions in m.olm.by_key.items():
        for s in sessions:
            if s.session_id in m.olm.dirty:
                out["olm_session"][s.session_id] = _j({"sender_key": sender_key, "pickle": s.pickle(key)})
    m.olm.dirty.clear()
    for room_id in m.rooms.dirty_outbound:
        o = m.rooms.outbound.get(room_id)
        if o is None:  # discarded
            out["outbound"][room_id] = None
            continue
        out["outbound"][room_id] = _j(
            {
                "pickle": o.session.pickle(key),
                "created_at": o.created_at,
                "message_count": o.message_count,
                "shared_with": sorted(o.shared_with),
            }
        )
    m.rooms.dirty_outbound.clear()
    for ref in m.rooms.dirty_inbound:
        i = m.rooms.inbound[ref]
        out["inbound"]["|".join(ref)] = _j(
            {
                "pickle": i.session.pickle(key),
                "sender": i.sender,
                "sender_device": i.sender_device,
                "sender_key": i.sender_key,
                "sender_ed25519": i.sender_ed25519,
                "imported": i.imported,
            }
        )
    m.rooms.dirty_inbound.clear()
    for _room_id, session_id, index, event_id in m.rooms.new_seen:
        out["seen"][f"{session_id}|{index}"] = event_id.encode()
    m.rooms.new_seen.clear()
    for user_id in m.dirty_pins:
        pin = m.pins[user_id]
        out["pin"][user_id] = _j(
            {"master_key": pin.master_key, "version": pin.version, "pinned_at": pin.pinned_at, "followed": list(pin.followed)}
        )
    m.dirty_pins.clear()
    for user_id in sorted(m.dirty_revoked):
        out["revoked"][user_id] = _j(sorted(m.revoked_keys.get(user_id, ())))
    m.dirty_revoked.clear()
    out[LEGACY_REVOKED] = dict.fromkeys(sorted(m.legacy_revoked_records))
    m.legacy_revoked_records.clear()
    return out


def load_records(m: CryptoMachine, records: dict[str, dict[str, bytes]], key: bytes) -> None:
    """Restore state saved by `export_changes`."""
    for raw in records.get("olm_session", {}).values():
        d = json.loads(raw)
        m.olm.by_key.setdefault(d["sender_key"], []).append(vodozemac.Session.from_pickle(d["pickle"], key))
    for room_id, raw in records.get("outbound", {}).items():
        d = json.loads(raw)
        m.rooms.outbound[room_id] = OutboundSession(
            room_id,
            vodozemac.GroupSession.from_pickle(d["pickle"], key),
            d["created_at"],
            d["message_count"],
            {(u, dv) for u, dv in d["shared_with"]},
        )
    for ref, raw in records.get("inbound", {}).items():
        d = json.loads(raw)
        room_id, session_id, sender_key = ref.split("|", 2)
        m.rooms.inbound[(room_id, session_id, sender_key)] = InboundSession(
            room_id,
            vodozemac.InboundGroupSession.from_pickle(d["pickle"], key),
            d["sender"],
            d["sender_device"],
            d["sender_key"],
            d["sender_ed25519"],
            bool(d.get("imported", False)),
        )
    for ref, raw in records.get("seen", {}).items():
        session_id, index = ref.rsplit("|", 1)
        m.rooms.seen[(session_id, int(index))] = raw.decode()
    for user_id, raw in records.get(LEGACY_PIN, {}).items():
        if user_id not in records.get("pin", {}) and user_id != m.identity.user_id:
            m.pins[user_id] = Pin(user_id, raw.decode(), 1, 0, (raw.decode(),))
    for user_id, raw in records.get("pin", {}).items():
        d = json.loads(raw)
        m.pins[user_id] = Pin(user_id, d["master_key"], int(d["version"]), int(d["pinned_at"]), tuple(d["followed"]))
    for user_id, raw in records.get("revoked", {}).items():
        saved = json.loads(raw)
        keys = {k for k in saved if isinstance(k, str)} if isinstance(saved, list) else set()
        if keys:
            m.revoked_keys[user_id] = keys
    m.legacy_revoked_records.update(records.get(LEGACY_REVOKED, {}))
