"""`tokenim devices link` on the command line, before anything reaches a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenim.cli.main import main


def test_devices_link_says_what_it_needs_before_asking_for_a_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--profile", str(tmp_path / "new"), "devices", "link", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "invalid_request" and "--server URL --username NAME" in error["message"]
    assert main(["--profile", str(tmp_path / "new"), "devices", "link", "--server", "ftp://x", "--username", "a"]) == 1
    assert "http://host:port" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
