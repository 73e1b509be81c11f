"""The SDK's audit surface: `client.security.review()` for anyone, `client.admin.audit()` and
`client.admin.verify_audit()` for admins only."""

from __future__ import annotations

import pytest

from tests.support import add_device
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import ErrorCode, TokenIMError


async def test_the_review_and_the_admins_audit_through_the_sdk(alice: Client, bob: Client, clock: FakeClock) -> None:
    review = await bob.security.review()
    assert review.flags == []
    assert [(x.outcome, x.device_id) for x in review.logins] == [("success", bob.device_id)]
    second = await add_device(bob, clock)
    review = await bob.security.review(days=1)
    assert [(f.kind, f.device_id) for f in review.flags] == [("new_device", second.device_id)]

    page = await alice.admin.audit(user_id=bob.user_id)
    assert [e.event for e in page.events] == ["device.added", "login", "account.registered"]
    report = await alice.admin.verify_audit()
    assert report.ok and report.head is not None and report.entries == report.head.seq

    for call in (bob.admin.audit(), bob.admin.verify_audit()):
        with pytest.raises(TokenIMError) as err:
            await call
        assert err.value.code is ErrorCode.FORBIDDEN
