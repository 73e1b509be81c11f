"""`tokenim keys …`: this account's master key, fingerprint and device keys."""

from __future__ import annotations

import argparse
from typing import Any

from tokenim.cli.account import open_client
from tokenim.cli.output import clean


async def cmd_keys_show(args: argparse.Namespace) -> dict[str, Any]:
    async with await open_client(args) as client:
        info = client.keys_info()
        return {
            "user_id": info.user_id,
            "master_key": info.master_key,
            "master_key_version": info.master_key_version,
            "fingerprint": info.fingerprint,
            "device_id": info.device_id,
            "device_keys": {"ed25519": info.device_ed25519, "curve25519": info.device_curve25519},
        }


def human_keys(r: dict[str, Any]) -> str:
    fp = r["fingerprint"].split()
    rows = [" ".join(fp[i : i + 4]) for i in range(0, len(fp), 4)]
    return "\n".join(
        [
            f"User:        {clean(r['user_id'])}",
            f"Master key:  {clean(r['master_key'])} (version {r['master_key_version']})",
            "Fingerprint: " + ("\n             ".join(rows)),
            f"Device:      {clean(r['device_id'])}",
            f"  ed25519:     {clean(r['device_keys']['ed25519'])}",
            f"  curve25519:  {clean(r['device_keys']['curve25519'])}",
        ]
    )


__all__ = ["cmd_keys_show", "human_keys"]
