"""The TokenIM client SDK: one `Client` per device, with a noun per area (`client.rooms`, `.messages`,
`.devices`, `.keys`, `.files`, `.admin`, `.account`, `.verification`). A test pins these names."""

from tokenim.client.contacts import ContactKeys, ExcludedDevice, KeyAcceptance, SendResult
from tokenim.client.facade import Client
from tokenim.client.keys import KeysInfo, VerifiedUserKeys
from tokenim.client.messages import Message
from tokenim.client.store import KdfParams, ProfileStore
from tokenim.client.stores import MemoryStore, Store
from tokenim.client.verification import SafetyNumber, SasShown, VerificationResult

__all__ = [
    "Client",
    "ContactKeys",
    "ExcludedDevice",
    "KdfParams",
    "KeyAcceptance",
    "KeysInfo",
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
