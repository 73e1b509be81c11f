"""The e2e harness itself: waiting for a server's output has a deadline, whether the process stays silent
or exits without saying it is serving."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningServer, kill_server, start_server, watch_output


def _process(code: str, tmp_path: Path) -> RunningServer:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return watch_output(RunningServer("http://127.0.0.1:9", tmp_path, proc))


def test_a_silent_process_fails_the_wait_at_its_deadline(tmp_path: Path) -> None:
    server = _process("import time; time.sleep(60)", tmp_path)
    try:
        with pytest.raises(AssertionError, match=re.escape("printed no 'serving' within 0.5 s")):
            server.wait_for_output("serving", timeout=0.5)
    finally:
        kill_server(server)


def test_a_process_that_exits_fails_the_wait_at_once_with_its_output(tmp_path: Path) -> None:
    server = _process("print('boom: no database'); raise SystemExit(3)", tmp_path)
    # Not the 600 s deadline: the wait ends as soon as the output is closed (the per-test timeout is 120 s).
    with pytest.raises(AssertionError, match=r"exited.*boom: no database"):
        server.wait_for_output("serving", timeout=600)


def test_a_server_that_cannot_start_fails_quickly(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-directory"
    bad.write_text("a file where the data directory should be")
    with pytest.raises(AssertionError, match="exited"):
        start_server(bad)
