from tokenim.client import Client


async def test_register_and_whoami(alice: Client, bob: Client) -> None:
    me = await alice.account.whoami()
    assert me.user_id == "@alice:tokenim.test"
    assert me.is_admin
    assert not (await bob.account.whoami()).is_admin
    keys = await bob.keys.query([alice.user_id])
    assert alice.device_id in keys[alice.user_id].devices
