"""The TokenIM client SDK: one `Client` per device, with a noun per area (`client.rooms`, `.messages`,
`.devices`, `.keys`, `.files`, `.backup`, `.admin`, `.account`, `.linking`, `.verification`,
`.audit`, `.security`, `.two_factor`). A test pins these names."""

from tokenim.client.backup import BackupCreated, BackupRestored, BackupStatus
from tokenim.client.contacts import ContactKeys, ExcludedDevice, KeyAcceptance, SendResult
from tokenim.client.facade import Client
from tokenim.client.keys import DeviceRevocation, KeysInfo, VerifiedUserKeys
from tokenim.client.lifecycle import KeyRotation, KeyStatus
from tokenim.client.link import LinkApproval, LinkInvitation
from tokenim.client.messages import Message
from tokenim.client.store import KdfParams, ProfileStore
from tokenim.client.stores import MemoryStore, Store
from tokenim.client.verification import SafetyNumber, SasShown, VerificationResult

__all__ = [
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
