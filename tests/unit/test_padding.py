"""Megolm plaintext is padded to size buckets: the ciphertext's length no longer tracks the message's."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_megolm_olm import ROOM, Dev, deliver, device, event, share_key
from tokenim.crypto.machine import RoomMessage
from tokenim.crypto.padding import MIN_BUCKET, pad, padded_length
from tokenim.protocol.events import MAX_CONTENT_BYTES, check_encrypted_content


@pytest.fixture
def pair() -> tuple[Dev, Dev]:
    alice, bob = device("alice"), device("bob")
    alice.trust(bob)
    bob.trust(alice)
    deliver(share_key(alice, bob), alice, bob)
    return alice, bob


def _ciphertext_len(content: dict[str, object]) -> int:
    return len(str(content["ciphertext"]))


def test_messages_of_different_lengths_in_one_bucket_look_the_same(pair: tuple[Dev, Dev]) -> None:
    alice, bob = pair
    texts = ["", "ok", "x" * 50, "y" * 150]
    contents = [alice.machine.encrypt_room_message(ROOM, {"type": "m.text", "body": t}) for t in texts]
    assert len({_ciphertext_len(c) for c in contents}) == 1
    longer = alice.machine.encrypt_room_message(ROOM, {"type": "m.text", "body": "z" * 400})
    assert _ciphertext_len(longer) > _ciphertext_len(contents[0])
    for i, (text, content) in enumerate(zip(texts, contents, strict=True)):
        got = bob.machine.decrypt_room_event(event(content, alice, f"$e{i}"))
        assert isinstance(got, RoomMessage)
        assert got.content == {"type": "m.text", "body": text}


def test_buckets_are_powers_of_two_and_capped_so_that_what_fits_still_fits() -> None:
    assert padded_length(1) == MIN_BUCKET
    assert padded_length(MIN_BUCKET) == MIN_BUCKET
    assert padded_length(MIN_BUCKET + 1) == 2 * MIN_BUCKET
    assert padded_length(3000) == 4096
    big = 40_000  # fits the server's limit unpadded; the next power of two (65,536) would not
    assert big <= padded_length(big) < 65_536
    huge = 10 * MAX_CONTENT_BYTES
    assert padded_length(huge) == huge  # no bucket: left as it is (the server's limit decides)


def test_the_largest_padded_message_is_still_accepted_by_the_server(pair: tuple[Dev, Dev]) -> None:
    alice, bob = pair
    body = "w" * 40_000  # padded to the top bucket, MAX_PADDED
    content = alice.machine.encrypt_room_message(ROOM, {"type": "m.text", "body": body})
    check_encrypted_content(content)
    longest_device_id = 32 - len(str(content["device_id"]))  # the budget holds for any device id
    used = sum(len(v) for v in content.values() if isinstance(v, str)) + longest_device_id
    # It fits, and the cap is tight: less than one more AES block (16 bytes, 22 base64 characters) is left
    # over, so no plaintext that fits goes out unpadded (found from outside: 48,832 to 48,975 bytes did).
    assert MAX_CONTENT_BYTES - 22 < used <= MAX_CONTENT_BYTES
    got = bob.machine.decrypt_room_event(event(content, alice, "$big"))
    assert isinstance(got, RoomMessage) and got.content["body"] == body


def test_unpadded_messages_from_older_clients_still_decrypt(pair: tuple[Dev, Dev]) -> None:
    alice, bob = pair
    out = alice.machine.rooms.outbound[ROOM]
    raw = json.dumps({"type": "m.text", "body": "old", "room_id": ROOM}).encode()
    content = alice.machine.encrypt_room_message(ROOM, {"type": "m.text", "body": "new"})
    content["ciphertext"] = out.session.encrypt(raw).to_base64()
    got = bob.machine.decrypt_room_event(event(content, alice, "$old"))
    assert isinstance(got, RoomMessage) and got.content["body"] == "old"


def test_pad_appends_spaces_only() -> None:
    body = b'{"a":1}'
    padded = pad(body)
    assert len(padded) == MIN_BUCKET and padded.startswith(body) and set(padded[len(body) :]) == {0x20}
    assert json.loads(padded) == {"a": 1}
