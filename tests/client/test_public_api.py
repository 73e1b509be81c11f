"""The SDK's public surface is pinned: adding or removing a name must be a deliberate change here."""

from __future__ import annotations

import inspect

import tokenim.client
from tokenim.client import Client

EXPECTED = [
    "BackupCreated",
    "BackupRestored",
    "BackupStatus",
    "Client",
    "ContactKeys",
    "DeviceRevocation",
    "ExcludedDevice",
    "KdfParams",
    "KeyAcceptance",
    "KeyRotation",
    "KeyStatus",
    "KeysInfo",
    "LinkApproval",
    "LinkInvitation",
    "MemoryStore",
    "Message",
    "ProfileStore",
    "SafetyNumber",
    "SasShown",
    "SendResult",
    "Store",
    "VerificationResult",
    "VerifiedUserKeys",
]

# The façade: what a program holding a `Client` may use, noun by noun.
FACADE = {
    "Client": {"account", "admin", "close", "device_id", "devices", "files", "full_user_id", "keys", "messages", "open"}
    | {"register", "rooms", "server_name", "user_id"}
    | {"audit", "backup", "import_master_key", "key_files", "link", "linking", "security", "two_factor", "verification"},
    "account": {"access_token", "logged_in", "login", "logout", "refresh", "whoami"},
    "admin": {"audit", "create_invite", "verify_audit"},
    "audit": {"events", "record"},
    "security": {"review"},
    "backup": {"create", "delete", "pending", "restore", "status", "upload", "upload_quietly"},
    "key_files": {"export_master_key", "export_room_keys", "import_room_keys"},
    "devices": {"all", "remove"},
    "files": {"describe", "download", "send"},
    "linking": {"approve"},
    "keys": {
        "accept",
        "claim",
        "contact",
        "counts",
        "devices_of",
        "followed_keys",
        "holds_current_master",
        "info",
        "is_pinned",
        "query",
        "recipients",
        "replenish",
        "require_current_master",
        "revoke",
        "rotate",
        "rotation_due",
        "status",
    },
    "messages": {"decrypt_event", "decrypt_events", "history", "listen", "process_to_device", "send_content", "send_text"}
    | {"share_room_key", "sync"},
    "rooms": {"all", "create", "devices", "direct", "forget_devices", "get", "invite", "join", "leave", "members"}
    | {"recipients", "remove", "rename", "resolve"},
    "two_factor": {"confirm", "disable", "enable", "status", "use_codes"},
    "verification": {"mark_verified", "safety_number", "sas", "status"},
}


def _public(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}


def test_public_names_are_pinned() -> None:
    assert sorted(tokenim.client.__all__) == EXPECTED
    assert len(tokenim.client.__all__) == len(set(tokenim.client.__all__))


def test_every_public_name_exists() -> None:
    for name in tokenim.client.__all__:
        assert getattr(tokenim.client, name) is not None, name


def test_star_import_exports_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from tokenim.client import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPECTED


def test_the_facade_and_each_noun_are_pinned() -> None:
    """`Client` carries one attribute per noun; each noun's public methods are listed here."""
    assert _public(Client) | set(inspect.get_annotations(Client)) == FACADE["Client"]
    for noun, expected in FACADE.items():
        if noun == "Client":
            continue
        cls = inspect.get_annotations(Client, eval_str=True)[noun]
        assert _public(cls) == expected, noun
