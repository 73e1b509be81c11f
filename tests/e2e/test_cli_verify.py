"""Verifying people from the command line against a real server: both people see the same safety number,
and two `tokenim verify` processes answer each other (the script reads the emoji on stdout and answers on
stdin); afterwards `read --json` says the sender is verified by SAS."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENIM, Cli, LineReader, RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = start_server(tmp_path / "data", "--registration", "open")
    yield srv
    stop_server(srv)


def _verify(cli: Cli, user: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENIM_")}
    env["TOKENIM_PASSPHRASE"] = cli.passphrase
    return subprocess.Popen(
        [*TOKENIM, "--profile", str(cli.profile), "verify", user, "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_verify_processes_answer_each_other(open_server: RunningServer, tmp_path: Path) -> None:
    alice, bob = Cli(tmp_path / "alice"), Cli(tmp_path / "bob")
    for name, cli in [("alice", alice), ("bob", bob)]:
        cli.json("register", "--server", open_server.url, "--username", name)
    alice.json("send", "@bob", "hello")

    mine, theirs = alice.json("fingerprint", "@bob"), bob.json("fingerprint", "@alice")
    assert mine["safety_number"] == theirs["safety_number"] and mine["verified"] is False
    refused = alice.run("fingerprint", "@bob", "--mark-verified", check=False)  # not at a terminal, no --number
    assert refused.returncode == 1 and "--number" in refused.stderr

    procs = [_verify(alice, "@bob"), _verify(bob, "@alice")]
    try:
        readers = [LineReader(p) for p in procs]
        shown = [json.loads(r.line(timeout=60))["sas"] for r in readers]
        assert shown[0]["emoji"] == shown[1]["emoji"] and len(shown[0]["emoji"]) == 7
        assert shown[0]["decimals"] == shown[1]["decimals"]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("yes\n")
            p.stdin.flush()
        results = [json.loads(r.line(timeout=60)) for r in readers]
        assert [(r["verified"], r["verified_by"], r["user_id"]) for r in results] == [
            (True, "sas", "@bob:localhost"),
            (True, "sas", "@alice:localhost"),
        ]
        assert [p.wait(timeout=30) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            for pipe in (p.stdin, p.stdout, p.stderr):
                if pipe is not None:
                    pipe.close()

    assert alice.json("fingerprint", "@bob")["verified_by"] == "sas"
    read = json.loads(bob.run("read", "@alice", "--json").stdout)
    assert [(m["body"], m["verified"], m["verified_by"], m["why_not"]) for m in read] == [("hello", True, "sas", None)]
    assert "(unverified)" not in bob.run("read", "@alice").stdout
