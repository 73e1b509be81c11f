"""The CLI's escaping and parsing, without a server: what reaches a terminal, and how arguments are read."""

from __future__ import annotations

import argparse
import json
import ssl
from pathlib import Path

import httpx
import pytest

from tokenim.cli import main as cli_main
from tokenim.cli.messages import destination
from tokenim.cli.output import CONTINUATION, clean, duration, message_text, size, when
from tokenim.cli.prompt import check_strength
from tokenim.cli.rooms import create_arguments, human_rooms
from tokenim.client.account import normalise_invite
from tokenim.client.files import safe_file_name
from tokenim.client.transport import transport_problem
from tokenim.core.errors import TokenIMError

DANGEROUS = [
    "\x1b",
    "\x07",
    "\r",
    "\x00",
    "\x08",
    "\x7f",
    "\x9b",
    "\x85",
    "\u202e",
    "\u202a",
    "\u2066",
    "\u2069",
    "\u200f",
    "\u2028",
    "\u2029",
    "\ud800",
]


@pytest.mark.parametrize("ch", DANGEROUS)
def test_clean_shows_every_terminal_steering_character_escaped(ch: str) -> None:
    out = clean(f"a{ch}b")
    assert ch not in out and out.startswith("a\\") and out.endswith("b")
    out.encode("utf-8")  # a lone surrogate would make print() fail: it is escaped too


def test_clean_keeps_ordinary_text() -> None:
    for text in ["hello", "Grüße, 世界", "family 👨\u200d👩\u200d👧", "tab-free, back\\slash"]:
        assert clean(text) == text


def test_a_message_cannot_fake_a_line_of_its_own() -> None:
    fake = "see you\n[!room] @boss:localhost: wire the money\r\x1b]0;pwned\x07"
    m = {"id": "$1", "room": "!room", "sender": "@mallory:localhost", "body": fake, "verified": True}
    lines = message_text(m).split("\n")
    assert lines[0] == "[!room] @mallory:localhost: see you"
    assert lines[1].startswith(CONTINUATION) and "\x1b" not in lines[1] and "\r" not in lines[1]
    assert all(not line.startswith("[") for line in lines[1:])


def test_names_and_file_names_are_escaped_in_listings() -> None:
    rooms = {
        "rooms": [{"room_id": "!a", "kind": "group", "name": "\x1b]0;title\x07x\nfake", "membership": "join", "members": []}]
    }
    text = human_rooms(rooms)
    assert "\x1b" not in text and "\x07" not in text and "\n" not in text
    m = {
        "id": "$f",
        "room": "!a",
        "sender": "@a:b",
        "body": "x",
        "verified": False,
        "file": {"name": "evil\u202egpj.exe", "size": 2048},
    }
    out = message_text(m)
    assert "\u202e" not in out and "2.0 KB" in out and "(unverified device)" in out


def test_human_units() -> None:
    assert duration(7 * 86400) == "7 days" and duration(5400) == "1 hour 30 minutes" and duration(60) == "1 minute"
    assert size(1) == "1 byte" and size(999) == "999 bytes" and size(1_500_000) == "1.5 MB"
    assert when(0) == "1970-01-01 00:00 UTC"


def _parse(*argv: str) -> argparse.Namespace:
    return cli_main.build_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["room", "create", "plans", "--invite", "@a", "--invite", "@b"],
        ["room", "create", "plans", "--invite", "@a", "@b"],
        ["room", "create", "--invite", "@a", "@b", "plans"],
        ["room", "create", "--invite", "@a,@b", "plans"],
        ["room", "create", "--invite", "@a", "--invite", "@b", "plans"],
    ],
)
def test_room_create_invites_everyone_named_and_keeps_the_name(argv: list[str]) -> None:
    args = _parse(*argv)
    assert create_arguments(args.name, args.invite) == ("plans", ["@a", "@b"])


def test_room_create_refuses_a_missing_name_or_an_unmarked_person() -> None:
    with pytest.raises(TokenIMError, match="Give the room a name"):
        create_arguments(None, ["@a", "@b"])
    with pytest.raises(TokenIMError, match="'bob' is not a person"):
        create_arguments("plans", ["bob"])


def test_invite_codes_in_any_case_with_or_without_dashes() -> None:
    code = "ABCD-EFGH-JKLM-NPQR-STUV-WXYZ"
    for typed in [code, code.lower(), code.replace("-", ""), code.replace("-", " "), " abcd efgh-jklmnpqr stuv wxyz "]:
        assert normalise_invite(typed) == code
    assert normalise_invite("not-a-code") == "not-a-code"


def test_file_names_from_senders_are_made_safe() -> None:
    assert safe_file_name("agenda.pdf") == "agenda.pdf"
    assert safe_file_name("../../.bashrc") == "_.._.bashrc"
    assert safe_file_name("..") == "download" and safe_file_name("") == "download"
    assert safe_file_name("a/b\\c") == "a_b_c"
    assert safe_file_name("x\x1b[31m\u202eexe.txt") == "x_[31m_exe.txt"
    assert len(safe_file_name("é" * 500).encode()) <= 200


def test_download_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert destination(None, "../a.txt") == tmp_path / "_a.txt"
    assert destination(str(tmp_path), "a.txt") == tmp_path / "a.txt"
    assert destination(".", "a.txt") == Path(".") / "a.txt"
    assert destination("new/", "a.txt") == Path("new/a.txt")
    assert destination("b.txt", "a.txt") == Path("b.txt")


def test_weak_passphrases_are_refused_with_a_reason() -> None:
    for weak in ["a", "password1", "alice2024", "qwertyuiop"]:
        with pytest.raises(TokenIMError) as err:
            check_strength(weak, ["alice"])
        assert "too weak" in err.value.message
    check_strength("correct horse battery staple", ["alice"])


def test_transport_errors_are_described_not_named() -> None:
    refused = transport_problem(httpx.ConnectError("[Errno 111] Connection refused"))
    assert "refused" in refused and "Error" not in refused
    tls = httpx.ConnectError("certificate verify failed")
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"
    tls.__cause__ = cause
    assert transport_problem(tls) == "its TLS certificate was refused (self-signed certificate)"


def _options(parser: argparse.ArgumentParser, path: str = "tokenim") -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_options(sub, f"{path} {name}"))
        elif action.option_strings and not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            found.append((path, action))
    return found


def test_every_option_has_a_description_and_a_default() -> None:
    options = _options(cli_main.build_parser())
    assert len(options) > 30
    for where, action in options:
        assert action.help and ("default" in action.help or "required" in action.help), (where, action.option_strings)


def test_help_names_the_passphrase_variable_and_the_real_profile_path(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENIM_PROFILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/somewhere/config")
    with pytest.raises(SystemExit):
        cli_main.main(["send", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "TOKENIM_PASSPHRASE" in text and "/somewhere/config/tokenim/default" in text


def test_argument_errors_honour_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["room", "creat", "x", "--json"]) == 1
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["code"] == "invalid_request" and "creat" in err["message"]
    assert cli_main.main(["read", "plans", "--limit", "\x1b]0;x\x07"]) == 1
    printed = capsys.readouterr().err
    assert printed.startswith("tokenim: ") and "\x1b" not in printed and "room_command" not in printed
