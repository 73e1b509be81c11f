"""The SDK's public surface is pinned: adding or removing a name must be a deliberate change here."""

from __future__ import annotations

import tokenim.client

EXPECTED = [
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
