"""The text `tokenim fingerprint` and `tokenim verify` print, and how `read` marks senders you have not verified."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tokenim.cli.main import build_parser
from tokenim.cli.output import message_text
from tokenim.cli.verify import InputEnded, human_verified, read_answer, safety_number_text, sas_text
from tokenim.client import SasShown
from tokenim.core.errors import ErrorCode

NUMBER = " ".join(f"{i:05d}" for i in range(12))


def _shown(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "user_id": "@bob:localhost",
        "safety_number": NUMBER,
        "pinned_master": "P",
        "current_master": "P",
        "key_changed": False,
        "current_safety_number": None,
        "verified": False,
        "verified_by": None,
        "why_not": "you have not verified @bob:localhost",
    }
    return {**base, **changes}


def test_the_safety_number_is_shown_in_three_rows_with_whether_they_are_verified() -> None:
    text = safety_number_text(_shown())
    assert "    00000 00001 00002 00003\n    00004 00005 00006 00007\n    00008 00009 00010 00011" in text
    assert "Verified: no: you have not verified @bob:localhost." in text and "Warning" not in text
    assert "Verified: yes, by comparing emoji (SAS)." in human_verified(_shown(verified=True, verified_by="sas", why_not=None))


def test_a_changed_key_is_named_with_its_number() -> None:
    other = " ".join(["99999"] * 12)
    text = safety_number_text(_shown(key_changed=True, current_safety_number=other, current_master="C"))
    assert "Warning: the server now shows another master key" in text and "99999 99999 99999 99999" in text
    assert "tokenim keys accept @bob:localhost" in text


def test_names_from_the_server_are_escaped() -> None:
    text = safety_number_text(_shown(user_id="@bob\x1b]0;x\x07:localhost", why_not="\u202eevil"))
    assert "\x1b" not in text and "\u202e" not in text
    sas = SasShown("@bob:localhost", "DEV\x1b[2J", [{"emoji": "🐶", "name": "Dog"}] * 7, [1000, 2000, 3000])
    out = sas_text(sas)
    assert "\x1b" not in out and "🐶  Dog" in out and "1000 2000 3000" in out


def test_read_marks_senders_you_have_not_verified() -> None:
    m = {"id": "$1", "room": "!r", "sender": "@bob:localhost", "body": "hi", "verified": True}
    assert message_text({**m, "verified_by": "sas", "why_not": None}) == "[!r] @bob:localhost: hi"
    assert message_text({**m, "verified_by": None, "why_not": "not verified"}) == "[!r] @bob:localhost (unverified): hi"
    assert message_text({**m, "verified": False, "why_not": "device"}) == "[!r] @bob:localhost (unverified device): hi"


def test_the_commands_parse() -> None:
    args = build_parser().parse_args(["fingerprint", "@bob", "--mark-verified", "--number", NUMBER])
    assert (args.user, args.mark_verified, args.number) == ("@bob", True, NUMBER)
    assert build_parser().parse_args(["verify", "@bob"]).user == "@bob"


async def test_an_answer_is_read_from_a_pipe_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"yes\nrest")
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        monkeypatch.setattr(sys, "stdin", pipe)
        assert await read_answer("") == "yes"
    answers = tmp_path / "answers"
    answers.write_text("no\n")
    with answers.open() as file:
        monkeypatch.setattr(sys, "stdin", file)
        assert await read_answer("") == "no"
    with open(os.devnull) as empty:  # input that ends is no answer (and no "no"): nobody is there
        monkeypatch.setattr(sys, "stdin", empty)
        with pytest.raises(InputEnded):
            await read_answer("")
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        monkeypatch.setattr(sys, "stdin", pipe)
        with pytest.raises(InputEnded) as ended:
            await read_answer("")
        assert ended.value.code is ErrorCode.CANCELLED
