"""Where a key file's passphrase comes from: the environment, else asked (twice and checked for a new file)."""

from __future__ import annotations

import pytest

from tokenim.cli import key_files
from tokenim.core.errors import ErrorCode, TokenIMError

STRONG = "tangerine lighthouse quarrel noodle"


class _Tty:
    def isatty(self) -> bool:
        return True


def _answers(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    asked: list[str] = []
    queue = list(answers)

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return queue.pop(0)

    monkeypatch.setattr(key_files, "ask", ask)
    monkeypatch.setattr(key_files.sys, "stdin", _Tty())
    monkeypatch.delenv(key_files.ENV, raising=False)
    return asked


def test_the_environment_wins_and_is_checked_for_a_new_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(key_files.ENV, STRONG)
    assert key_files.file_passphrase(new=True, user_inputs=[]) == STRONG
    monkeypatch.setenv(key_files.ENV, "password1")
    with pytest.raises(TokenIMError) as exc:
        key_files.file_passphrase(new=True, user_inputs=[])
    assert "too weak" in exc.value.message
    assert key_files.file_passphrase(new=False, user_inputs=[]) == "password1"  # opening an old file: as it was made
    monkeypatch.setenv(key_files.ENV, "")
    with pytest.raises(TokenIMError):
        key_files.file_passphrase(new=False, user_inputs=[])


def test_a_new_file_asks_twice_and_the_two_must_match(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _answers(monkeypatch, STRONG, STRONG)
    assert key_files.file_passphrase(new=True, user_inputs=[]) == STRONG
    assert len(asked) == 2
    _answers(monkeypatch, STRONG, STRONG + "x")
    with pytest.raises(TokenIMError) as exc:
        key_files.file_passphrase(new=True, user_inputs=[])
    assert "differ" in exc.value.message
    asked = _answers(monkeypatch, "abc")
    with pytest.raises(TokenIMError):
        key_files.file_passphrase(new=True, user_inputs=[])
    assert len(asked) == 1  # weak: refused before asking again


def test_opening_a_file_asks_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _answers(monkeypatch, "anything")
    assert key_files.file_passphrase(new=False, user_inputs=[]) == "anything"
    assert asked == ["Key file passphrase: "]


def test_not_at_a_terminal_without_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(key_files.ENV, raising=False)

    class _Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(key_files.sys, "stdin", _Pipe())
    with pytest.raises(TokenIMError) as exc:
        key_files.file_passphrase(new=False, user_inputs=[])
    assert exc.value.code is ErrorCode.BAD_CONFIG and key_files.ENV in exc.value.message
