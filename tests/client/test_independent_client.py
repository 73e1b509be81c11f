"""An independent client built from docs/protocol.md alone (vodozemac and pyca directly, no TokenIM code)
registers, logs in, shares a room key over Olm and sends a Megolm message; the SDK client reads it.

Everything the independent side does follows a section of docs/protocol.md, cited in the comments.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import vodozemac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tokenim.client import Client


def b64(data: bytes) -> str:  # "Encoding": standard base64 without padding
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def canonical(obj: Any) -> bytes:  # "Encoding": keys sorted, no whitespace, UTF-8 not escaped
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_bytes(obj: dict[str, Any]) -> bytes:  # "Signatures": without `signatures` and `unsigned`
    return canonical({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


class Independent:
    """A client written from the docs: a vodozemac Account is the device, a pyca key the master key."""

    def __init__(self, http: httpx.AsyncClient, username: str, server_name: str, now: int) -> None:
        self.http = http
        self.user_id = f"@{username}:{server_name}"
        self.device_id = "INDEPENDENT1"
        self.account = vodozemac.Account()
        self.master = Ed25519PrivateKey.generate()
        self.master_pub = b64(self.master.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.now = now
        self.token = ""

    def _sign(self, obj: dict[str, Any], key_id: str, *, device: bool) -> None:
        sig = self.account.sign(signed_bytes(obj)).to_base64() if device else b64(self.master.sign(signed_bytes(obj)))
        obj.setdefault("signatures", {}).setdefault(self.user_id, {})[f"ed25519:{key_id}"] = sig

    async def register(self) -> None:
        # "Key objects": the master key signs itself; device keys are signed by the device and the master key;
        # "the device's Ed25519 key is the Olm account's own Ed25519 identity key".
        master = {"user_id": self.user_id, "usage": ["master"], "keys": {f"ed25519:{self.master_pub}": self.master_pub},
                  "version": 1, "created_at": self.now}  # fmt: skip
        self._sign(master, self.master_pub, device=False)
        did = self.device_id
        device = {
            "user_id": self.user_id,
            "device_id": did,
            "algorithms": ["tokenim.olm.v1.curve25519-aes-sha2", "tokenim.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{did}": self.account.curve25519_key.to_base64(),
                f"ed25519:{did}": self.account.ed25519_key.to_base64(),
            },
            "master_key_version": 1,
            "created_at": self.now,
        }
        self._sign(device, did, device=True)
        self._sign(device, self.master_pub, device=False)
        body = {"username": self.user_id[1:].split(":")[0], "master_key": master, "device_keys": device}
        resp = await self.http.post("/v1/register", json=body)
        assert resp.status_code == 200, resp.text

    async def login(self) -> None:
        # "Login by key"
        resp = await self.http.post("/v1/login/challenge", json={"user_id": self.user_id, "device_id": self.device_id})
        challenge = resp.json()
        payload = {"device_id": self.device_id, "nonce": challenge["nonce"], "server_name": challenge["server_name"],
                   "type": "tokenim.login.v1", "user_id": self.user_id}  # fmt: skip
        signature = self.account.sign(canonical(payload)).to_base64()
        resp = await self.http.post("/v1/login", json={"user_id": self.user_id, "device_id": self.device_id,
                                                       "nonce": challenge["nonce"], "signature": signature})  # fmt: skip
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["access_token"]

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = await self.http.request(method, path, json=body, headers={"Authorization": f"Bearer {self.token}"})
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def device_of(self, user_id: str) -> tuple[str, str, str]:
        """(device id, curve25519, ed25519) of the user's device, its signatures checked as the docs say."""
        user = (await self.call("POST", "/v1/keys/query", {"user_ids": [user_id]}))["users"][user_id]
        master = user["master_key"]
        (master_pub,) = master["keys"].values()
        master_key = Ed25519PublicKey.from_public_bytes(unb64(master_pub))
        master_key.verify(unb64(master["signatures"][user_id][f"ed25519:{master_pub}"]), signed_bytes(master))
        ((did, dk),) = user["devices"].items()
        master_key.verify(unb64(dk["signatures"][user_id][f"ed25519:{master_pub}"]), signed_bytes(dk))
        ed = dk["keys"][f"ed25519:{did}"]
        Ed25519PublicKey.from_public_bytes(unb64(ed)).verify(unb64(dk["signatures"][user_id][f"ed25519:{did}"]), signed_bytes(dk))
        return did, dk["keys"][f"curve25519:{did}"], ed

    async def share_room_key(self, room_id: str, user_id: str, group: vodozemac.GroupSession) -> None:
        did, curve, ed = await self.device_of(user_id)
        # "One-time and fallback keys" / keys/claim: the id comes back as signed_curve25519:<id>, signed by the device
        claimed = (await self.call("POST", "/v1/keys/claim", {"devices": {user_id: [did]}}))["one_time_keys"][user_id][did]
        assert claimed["key_id"].startswith("signed_curve25519:")
        otk = claimed["key"]
        Ed25519PublicKey.from_public_bytes(unb64(ed)).verify(
            unb64(otk["signatures"][user_id][f"ed25519:{did}"]), signed_bytes(otk)
        )
        session = self.account.create_outbound_session(
            vodozemac.Curve25519PublicKey.from_base64(curve), vodozemac.Curve25519PublicKey.from_base64(otk["key"])
        )
        # "Sharing a room key": the room-key content inside the Olm plaintext
        room_key = {"algorithm": "tokenim.megolm.v1.aes-sha2", "room_id": room_id, "session_id": group.session_id,
                    "session_key": group.session_key.to_base64()}  # fmt: skip
        plaintext = {"type": "m.room_key", "content": room_key, "sender": self.user_id, "sender_device": self.device_id,
                     "keys": {"ed25519": self.account.ed25519_key.to_base64()}, "recipient": user_id,
                     "recipient_keys": {"ed25519": ed}}  # fmt: skip
        msg_type, body = session.encrypt(json.dumps(plaintext).encode()).to_parts()
        content = {"algorithm": "tokenim.olm.v1.curve25519-aes-sha2", "sender_key": self.account.curve25519_key.to_base64(),
                   "ciphertext": {curve: {"type": msg_type, "body": b64(body)}}}  # fmt: skip
        await self.call("POST", "/v1/to_device", {"type": "m.room.encrypted", "messages": {user_id: {did: content}}})

    async def send_text(self, room_id: str, group: vodozemac.GroupSession, text: str) -> None:
        # "Room messages": Megolm over {"type": "m.text", "body", "room_id"}
        plaintext = {"type": "m.text", "body": text, "room_id": room_id}
        ciphertext = group.encrypt(json.dumps(plaintext).encode()).to_base64()
        content = {"algorithm": "tokenim.megolm.v1.aes-sha2", "ciphertext": ciphertext,
                   "session_id": group.session_id, "sender_key": self.account.curve25519_key.to_base64(),
                   "device_id": self.device_id}  # fmt: skip
        await self.call("PUT", f"/v1/rooms/{room_id}/send/txn1", {"type": "m.room.encrypted", "content": content})

    async def publish_one_time_keys(self, count: int) -> None:
        # "One-time and fallback keys": {"signed_curve25519:<id>": {"key", "signatures"}}, signed by the device
        self.account.generate_one_time_keys(count)
        otks = {}
        for key_id, key in self.account.one_time_keys.items():
            obj: dict[str, Any] = {"key": key.to_base64()}
            self._sign(obj, self.device_id, device=True)
            otks[f"signed_curve25519:{key_id}"] = obj
        counts = await self.call("POST", "/v1/keys/upload", {"one_time_keys": otks})
        assert counts["one_time_keys"] == count
        self.account.mark_keys_as_published()

    async def receive(self, room_id: str, sender: str) -> list[str]:
        """Sync; take room keys from to-device messages (checked as the docs say), decrypt the room's messages."""
        page = await self.call("GET", "/v1/sync?since=0")
        _did, sender_curve, sender_ed = await self.device_of(sender)
        sessions: dict[str, vodozemac.InboundGroupSession] = {}
        for msg in page["to_device"]:
            content = msg["content"]
            assert msg["type"] == "m.room.encrypted" and content["algorithm"] == "tokenim.olm.v1.curve25519-aes-sha2"
            mine = content["ciphertext"][self.account.curve25519_key.to_base64()]
            olm_message = vodozemac.AnyOlmMessage.from_parts(mine["type"], unb64(mine["body"]))
            pre_key = olm_message.to_pre_key()
            assert pre_key is not None  # the sender's first message starts the session
            _session, plaintext = self.account.create_inbound_session(
                vodozemac.Curve25519PublicKey.from_base64(content["sender_key"]), pre_key
            )
            payload = json.loads(plaintext)
            # "Sending a room key": the checks a recipient makes
            assert payload["recipient"] == self.user_id
            assert payload["recipient_keys"] == {"ed25519": self.account.ed25519_key.to_base64()}
            assert payload["sender"] == msg["sender"] == sender and payload["sender_device"] == msg["sender_device"]
            assert content["sender_key"] == sender_curve and payload["keys"] == {"ed25519": sender_ed}
            assert payload["type"] == "m.room_key"
            key = payload["content"]
            assert key["algorithm"] == "tokenim.megolm.v1.aes-sha2" and key["room_id"] == room_id
            session = vodozemac.InboundGroupSession(vodozemac.SessionKey(key["session_key"]))
            assert session.session_id == key["session_id"]
            sessions[key["session_id"]] = session
        await self.call("POST", "/v1/to_device/ack", {"up_to": max(m["id"] for m in page["to_device"])})
        texts = []
        for event in page["events"]:
            if event["room_id"] != room_id or event["type"] != "m.room.encrypted":
                continue
            content = event["content"]
            assert content["sender_key"] == sender_curve and content["device_id"] == event["sender_device"]
            decrypted = sessions[content["session_id"]].decrypt(vodozemac.MegolmMessage.from_base64(content["ciphertext"]))
            plaintext = json.loads(decrypted.plaintext)
            assert plaintext["room_id"] == room_id
            texts.append(plaintext["body"])
        return texts


async def test_a_client_written_from_the_docs_shares_a_room_key_the_sdk_accepts(http: httpx.AsyncClient, bob: Client) -> None:
    server_name = (await http.get("/health")).json()["server_name"]
    ivan = Independent(http, "ivan", server_name, now=1_800_000_000_000)
    await ivan.register()
    await ivan.login()
    room_id = (await ivan.call("POST", "/v1/rooms", {"name": "interop", "invite": [bob.user_id]}))["room_id"]
    await bob.rooms.join(room_id)

    group = vodozemac.GroupSession()
    await ivan.share_room_key(room_id, bob.user_id, group)
    await ivan.send_text(room_id, group, "hello from a client written from the docs")

    messages = [m for m in await bob.messages.sync() if m.room == room_id and m.body is not None]
    assert [(m.sender, m.sender_device, m.body, m.warning) for m in messages] == [
        (ivan.user_id, ivan.device_id, "hello from a client written from the docs", None)
    ]
    assert messages[0].verified  # the key came over Olm from a device signed by ivan's (first-seen) master key


async def test_the_fingerprint_is_computed_as_the_docs_say(bob: Client) -> None:
    """docs/protocol.md "Master key": SHA-512("tokenim-fingerprint-v1" || key), 12 groups of 5 bytes mod 100,000."""
    info = bob.keys.info()
    digest = hashlib.sha512(b"tokenim-fingerprint-v1" + unb64(info.master_key)).digest()
    groups = [int.from_bytes(digest[5 * i : 5 * i + 5], "big") % 100_000 for i in range(12)]
    assert info.fingerprint == " ".join(f"{g:05d}" for g in groups)


async def test_a_client_written_from_the_docs_receives_a_room_key_and_message_from_the_sdk(
    http: httpx.AsyncClient, alice: Client
) -> None:
    server_name = (await http.get("/health")).json()["server_name"]
    ivan = Independent(http, "ivan", server_name, now=1_800_000_000_000)
    await ivan.register()
    await ivan.login()
    await ivan.publish_one_time_keys(5)
    room = await alice.rooms.create("interop", invite=[ivan.user_id])
    await ivan.call("POST", f"/v1/rooms/{room.room_id}/join")
    await alice.messages.send_text(room.room_id, "hello to a client written from the docs")
    assert await ivan.receive(room.room_id, alice.user_id) == ["hello to a client written from the docs"]
