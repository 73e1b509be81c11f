"""The link channel alone (crypto/link.py): SPAKE2 keys agree only with the same code, sealed messages are bound
to their side and number, confirmations bind the master key and the new device's keys, and the approving
device's checks on the new device's keys."""

from __future__ import annotations

import copy

import pytest
import vodozemac

from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.core.ids import DeviceId, UserId
from tokenim.core.signing import PublicMasterKey, SigningKey, sign_json
from tokenim.crypto.device import DeviceIdentity
from tokenim.crypto.link import (
    Bound,
    LinkChannel,
    LinkCode,
    LinkError,
    check_new_device,
    device_signed_keys,
    export_room_keys,
    import_room_keys,
)
from tokenim.crypto.megolm import RoomSessions
from tokenim.protocol.link import LinkFailure, LinkSide

USER = "@alice:tokenim.test"
NOW = 1_800_000_000_000


def pair(code: LinkCode, other_code: LinkCode | None = None) -> tuple[LinkChannel, LinkChannel]:
    new = LinkChannel(LinkSide.NEW, code, USER)
    approver = LinkChannel(LinkSide.APPROVER, other_code or code, USER)
    new.receive_pake(approver.pake_message)
    approver.receive_pake(new.pake_message)
    return new, approver


def new_device(master: SigningKey | None = None) -> DeviceIdentity:
    key = PublicMasterKey((master or SigningKey.generate()).public_key)
    return DeviceIdentity(UserId(USER), DeviceId("NEWDEVICE1"), vodozemac.Account(), key, 1, NOW)


def test_codes_read_as_typed_and_refuse_anything_else() -> None:
    code = LinkCode.new("K7QM2X")
    assert LinkCode.parse(str(code).lower().replace("-", " ")) == code
    assert len(str(code)) == 16 and str(code).count("-") == 2
    for bad in ("", "K7QM2X-ABCD", "K7QM2X-ABCD-EFG1", "K7QM2X-ABCD-EFGHJ", "K7QM2O-ABCD-EFGH"):
        with pytest.raises(TokenIMError) as err:
            LinkCode.parse(bad)
        assert err.value.code is ErrorCode.INVALID_REQUEST


def test_the_same_code_gives_both_sides_the_same_keys() -> None:
    new, approver = pair(LinkCode.new("K7QM2X"))
    assert approver.open(2, new.seal(2, {"type": "x", "n": 1})) == {"type": "x", "n": 1}
    assert new.open(3, approver.seal(3, {"type": "y"})) == {"type": "y"}


def test_a_wrong_code_is_a_mismatch_at_the_first_sealed_message() -> None:
    code = LinkCode.new("K7QM2X")
    wrong = LinkCode(code.link_id, "A" * 8 if code.password != "A" * 8 else "B" * 8)
    new, approver = pair(code, wrong)
    with pytest.raises(LinkError) as err:
        approver.open(2, new.seal(2, {}))
    assert err.value.reason is LinkFailure.MISMATCH
    with pytest.raises(LinkError) as err:
        new.open(2, approver.seal(2, {}))
    assert err.value.reason is LinkFailure.MISMATCH


def test_another_slot_or_user_with_the_same_password_does_not_agree() -> None:
    code = LinkCode.new("K7QM2X")
    new = LinkChannel(LinkSide.NEW, code, USER)
    approver = LinkChannel(LinkSide.APPROVER, LinkCode("K7QM2Y", code.password), USER)
    new.receive_pake(approver.pake_message)
    approver.receive_pake(new.pake_message)
    with pytest.raises(LinkError):
        approver.open(2, new.seal(2, {}))


def test_a_sealed_message_is_bound_to_its_number_and_side() -> None:
    new, approver = pair(LinkCode.new("K7QM2X"))
    sealed = new.seal(3, {"type": "x"})
    for attempt in (lambda: approver.open(4, sealed), lambda: new.open(3, sealed)):
        with pytest.raises(LinkError) as err:
            attempt()
        assert err.value.reason is LinkFailure.TAMPERED
    changed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(LinkError):
        approver.open(3, changed)


def test_a_malformed_pake_message_is_refused() -> None:
    channel = LinkChannel(LinkSide.NEW, LinkCode.new("K7QM2X"), USER)
    with pytest.raises(LinkError) as err:
        channel.receive_pake(b"\x00" * 5)
    assert err.value.reason is LinkFailure.TAMPERED


def test_confirmations_bind_the_master_key_and_the_new_devices_keys() -> None:
    new, approver = pair(LinkCode.new("K7QM2X"))
    bound = Bound({"master": 1}, {"device": 1})
    approver.check_confirmation(bound, new.confirmation(bound))
    new.check_confirmation(bound, approver.confirmation(bound))
    for other in (Bound({"master": 2}, {"device": 1}), Bound({"master": 1}, {"device": 2})):
        with pytest.raises(LinkError):
            approver.check_confirmation(other, new.confirmation(bound))
    with pytest.raises(LinkError):  # a side's own confirmation reflected back is not the other side's
        new.check_confirmation(bound, new.confirmation(bound))
    with pytest.raises(LinkError):
        new.check_confirmation(bound, None)


def test_the_approver_checks_the_new_devices_keys_before_signing() -> None:
    master = SigningKey.generate()
    device = new_device(master)
    keys = device_signed_keys(device, NOW)
    assert check_new_device(keys, USER, 1).device_id == "NEWDEVICE1"
    with pytest.raises(LinkError, match="not for you"):
        check_new_device(keys, "@mallory:tokenim.test", 1)
    with pytest.raises(LinkError, match="version"):
        check_new_device(keys, USER, 2)
    presigned = sign_json(keys, USER, master.public_key, master)
    with pytest.raises(LinkError, match="signatures other"):
        check_new_device(presigned, USER, 1)
    forged = copy.deepcopy(keys)
    forged["created_at"] = NOW + 1
    with pytest.raises(LinkError) as err:
        check_new_device(forged, USER, 1)
    assert err.value.reason is LinkFailure.REFUSED
    with pytest.raises(LinkError):
        check_new_device({"not": "keys"}, USER, 1)


def test_room_keys_travel_from_the_first_known_index_and_garbage_is_skipped() -> None:
    source = RoomSessions(USER, "OLDDEVICE1", "curve", "ed")
    outbound, _ = source.prepare("!room", [], NOW)
    message = source.encrypt("!room", {"type": "m.text", "body": "old"})
    exported = export_room_keys(source)
    target = RoomSessions(USER, "NEWDEVICE1", "curve2", "ed2")
    assert import_room_keys(target, [*exported, "junk", {"room_id": "!room"}]) == 1
    decrypted = target.decrypt("!room", "$e1", USER, message)
    assert decrypted.plaintext["body"] == "old" and decrypted.message_index == 0
    assert outbound.session.session_id == decrypted.session.session.session_id
    with pytest.raises(LinkError):
        import_room_keys(target, {"not": "a list"})
