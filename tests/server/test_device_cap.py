"""An account holds at most `MAX_DEVICES_PER_USER` devices, and says so where a client writer looks: the number
refused is the number docs/protocol.md and the route's description in /openapi.json state (found from outside:
the cap was enforced but written nowhere)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.support import add_device
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import TokenIMError
from tokenim.core.limits import MAX_DEVICES_PER_USER

PROTOCOL = Path(__file__).parents[2] / "docs" / "protocol.md"


async def test_the_device_cap_is_the_documented_one(http: httpx.AsyncClient, alice: Client, clock: FakeClock) -> None:
    doc = (await http.get("/openapi.json")).json()
    description = doc["paths"]["/v1/devices"]["post"]["description"]
    stated = {int(n) for n in re.findall(r"at most (\d+) devices", description + PROTOCOL.read_text())}
    assert stated == {MAX_DEVICES_PER_USER}, stated
    for _ in range(MAX_DEVICES_PER_USER - 1):  # alice's own device is the first
        await add_device(alice, clock)
    with pytest.raises(TokenIMError) as refused:
        await add_device(alice, clock)
    assert refused.value.code.value == "too_many_keys"
    assert f"at most {MAX_DEVICES_PER_USER} devices" in refused.value.message
    devices = (await http.get("/v1/devices", headers={"Authorization": f"Bearer {alice.account.access_token()}"})).json()
    assert len(devices["devices"]) == MAX_DEVICES_PER_USER
