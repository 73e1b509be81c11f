"""The audit log and the security review through the CLI, on a real server: a user reviews their logins, an
admin lists and verifies the log, and a row edited in the server's database file is named by `verify`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli, RunningServer

pytestmark = pytest.mark.e2e


def test_review_list_and_verify_and_an_edited_row_is_named(server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    alice.json("register", "--server", server.url, "--username", "alice", "--invite", server.bootstrap_invite)
    invite = alice.json("admin", "invite", "create", "--expires", "1d")
    bob.json("register", "--server", server.url, "--username", "bob", "--invite", str(invite["code"]))
    bob.json("login")

    review = bob.json("security", "review")
    assert review["user_id"] == "@bob:localhost" and review["flags"] == []
    assert [(x["outcome"], x["ip"]) for x in review["logins"]] == [("success", "127.0.0.1")] * 2
    assert review["logins"][0]["user_agent"].startswith("python-httpx/")
    text = bob.run("security", "review").stdout
    assert "Security review of @bob:localhost, last 30 days" in text and "Nothing looks wrong." in text
    assert "ok" in text and "from 127.0.0.1" in text and "account.registered" in text

    denied = bob.run("admin", "audit", "verify", check=False)
    assert denied.returncode == 1 and "Only an admin" in denied.stderr

    page = alice.json("admin", "audit", "--user", "@bob")
    assert [e["event"] for e in page["events"]] == ["logout", "login", "login", "account.registered"]  # ends the old one
    listing = alice.run("admin", "audit", "--limit", "3").stdout.splitlines()
    assert len(listing) == 4 and "admin.audit_listed  @alice:localhost" in listing[0] and "--before" in listing[-1]

    ok = alice.run("admin", "audit", "verify")
    assert "The audit log is intact" in ok.stdout
    assert json.loads(alice.run("admin", "audit", "verify", "--json").stdout)["ok"] is True

    # Someone with the database file rewrites who registered as an admin.
    db = sqlite3.connect(server.data_dir / "tokenim.db")
    try:
        with db:
            bobs = "SELECT seq FROM audit_log WHERE event = 'account.registered' AND user_id = '@bob:localhost'"
            (seq,) = db.execute(bobs).fetchone()
            db.execute("UPDATE audit_log SET details_json = '{\"is_admin\": true}' WHERE seq = ?", (seq,))
    finally:
        db.close()
    broken = alice.run("admin", "audit", "verify", check=False)
    assert broken.returncode == 1
    assert f"entry {seq}: changed: Entry {seq}" in broken.stdout and "broken: 1 problem" in broken.stdout
    report = json.loads(alice.run("admin", "audit", "verify", "--json", check=False).stdout)
    assert (report["ok"], report["failed"]) == (False, True)
    assert [(p["entry"], p["kind"]) for p in report["problems"]] == [(seq, "changed")]
