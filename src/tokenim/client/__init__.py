"""The TokenIM client SDK: register, log in, manage devices and keys. A test pins these names."""

from tokenim.client.keys import VerifiedUserKeys
from tokenim.client.sdk import Client, KeysInfo
from tokenim.client.store import KdfParams, ProfileStore

__all__ = ["Client", "KdfParams", "KeysInfo", "ProfileStore", "VerifiedUserKeys"]
