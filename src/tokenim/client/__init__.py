"""The TokenIM client SDK: accounts, devices, keys and end-to-end encrypted messaging. A test pins these names."""

from tokenim.client.contacts import ContactKeys, ExcludedDevice, KeyAcceptance, SendResult
from tokenim.client.keys import VerifiedUserKeys
from tokenim.client.messaging import Client, Message
from tokenim.client.sdk import KeysInfo
from tokenim.client.store import KdfParams, ProfileStore

__all__ = [
    "Client",
    "ContactKeys",
    "ExcludedDevice",
    "KdfParams",
    "KeyAcceptance",
    "KeysInfo",
    "Message",
    "ProfileStore",
    "SendResult",
    "VerifiedUserKeys",
]
