"""`tokenim backup …` in-process: where the recovery key and passphrase come from, refusals in one sentence,
and what a person reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tokenim.cli import backup
from tokenim.cli import main as cli_main


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [k for k in os.environ if k.startswith("TOKENIM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TOKENIM_PASSPHRASE", "correct horse battery staple")
    monkeypatch.chdir(tmp_path)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    code = cli_main.main([*argv, "--json", "--profile", "nowhere"])
    out, _err = capsys.readouterr()
    assert code == 1
    error: dict[str, object] = json.loads(out)["error"]
    return error


def test_restore_without_a_profile_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    """`restore` looks at the backup (key or passphrase?) before asking for anything, so it opens the profile
    first; no key and no terminal is tested on a real profile in tests/client/test_user_findings.py."""
    for argv in (("backup", "restore"), ("backup", "restore", "--passphrase")):
        assert run_json(capsys, *argv)["code"] == "profile_missing"


def test_a_weak_recovery_passphrase_is_refused_before_the_profile_is_opened(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENIM_RECOVERY_PASSPHRASE", "backup1")
    error = run_json(capsys, "backup", "create", "--passphrase")
    assert error["code"] == "invalid_request" and "too weak" in str(error["message"])


def test_the_recovery_key_is_shown_once_with_what_it_is_for() -> None:
    text = backup.human_created({"version": 2, "recovery_key": "ABCD EFGH", "keys": 1})
    assert "Backed up 1 room key (backup version 2)" in text and "    ABCD EFGH" in text and "only this once" in text
    assert "passphrase" in backup.human_created({"version": 2, "recovery_key": None, "keys": 3})


def test_status_reads_as_sentences() -> None:
    assert "no key backup" in backup.human_status({"exists": False})
    status = {"exists": True, "version": 4, "keys": 9, "last_uploaded_at": 1_700_000_000_000, "backs_up": True}
    text = backup.human_status(status | {"pending": 2, "passphrase": False})
    assert "version 4: 9 room keys, last uploaded" in text and "(2 waiting to be uploaded)" in text
    text = backup.human_status(status | {"backs_up": False, "pending": 0, "passphrase": True})
    assert "recovery passphrase" in text and "does not back up" in text
