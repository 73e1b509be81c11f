"""The profile passphrase: where it comes from, and whether a new one is strong enough."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from zxcvbn import zxcvbn

from tokenim.client.transport import CodeSource
from tokenim.client.two_factor import clean_code
from tokenim.core.errors import ErrorCode, TokenIMError

# zxcvbn's scale: 3 is "safely unguessable: moderate protection from offline slow-hash scenario".
MIN_SCORE = 3


class PromptAborted(Exception):
    """The person pressed Ctrl-C or Ctrl-D at a prompt."""

    def __init__(self, interrupted: bool) -> None:
        super().__init__("interrupted" if interrupted else "end of input")
        self.interrupted = interrupted


def ask(prompt: str) -> str:
    """A hidden prompt; Ctrl-C and Ctrl-D end it cleanly instead of being swallowed or raising.

    Inside the event loop (a prompt after the profile is open) asyncio's own Ctrl-C handler only cancels the
    running task, which can't happen while the prompt blocks, so the first Ctrl-C would be ignored: Python's
    default handler is put back while the prompt waits."""
    try:
        with _default_sigint():
            return getpass.getpass(prompt)
    except KeyboardInterrupt:
        raise PromptAborted(interrupted=True) from None
    except EOFError:
        raise PromptAborted(interrupted=False) from None


@contextlib.contextmanager
def _default_sigint() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt here, whatever handler the event loop installed; restored after."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGINT)
        if callable(current) and current is not signal.default_int_handler:
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


PROFILE_PURPOSE = "It protects your keys if this computer is lost."


def check_strength(passphrase: str, user_inputs: list[str], purpose: str = PROFILE_PURPOSE) -> None:
    """Refuse a passphrase that a strength estimator finds guessable, saying why and what it protects."""
    result = zxcvbn(passphrase[:100], user_inputs=user_inputs)
    if result["score"] >= MIN_SCORE:
        return
    feedback = result.get("feedback") or {}
    reason = feedback.get("warning") or "It would be guessed quickly."
    hints = " ".join(feedback.get("suggestions") or ["Use four or more uncommon words."])
    reason = reason if reason.endswith(".") else reason + "."
    raise TokenIMError(
        ErrorCode.INVALID_REQUEST,
        f"That passphrase is too weak: {reason} {hints} {purpose}",
    )


def read_passphrase(passphrase_file: str | None, *, new: bool = False, user_inputs: list[str] | None = None) -> str:
    """From --passphrase-file, then TOKENIM_PASSPHRASE, then a prompt (twice, and checked, for a new profile)."""
    if passphrase_file:
        try:
            text = Path(passphrase_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise TokenIMError(ErrorCode.BAD_CONFIG, f"Cannot read the passphrase file: {reason}.") from None
    elif os.environ.get("TOKENIM_PASSPHRASE"):
        text = os.environ["TOKENIM_PASSPHRASE"]
    elif not sys.stdin.isatty():
        raise TokenIMError(
            ErrorCode.BAD_CONFIG, "No passphrase: use --passphrase-file or TOKENIM_PASSPHRASE when not at a terminal."
        )
    else:
        text = ask("New profile passphrase: " if new else "Profile passphrase: ")
        _given(text)
        if new:
            check_strength(text, user_inputs or [])
            if ask("Repeat the passphrase: ") != text:
                raise TokenIMError(ErrorCode.INVALID_REQUEST, "The two passphrases differ.")
        return text
    _given(text)
    if new:
        check_strength(text, user_inputs or [])
    return text


def _given(text: str) -> None:
    if not text:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, "No passphrase was given: type the profile's passphrase.")


OTP_ENV = "TOKENIM_OTP"
NO_TERMINAL = (
    "This needs a current two-factor code, and there is no terminal to ask at: add --otp CODE or set TOKENIM_OTP "
    "(the 6 digits your authenticator app shows now)."
)


def given_code(args: argparse.Namespace) -> str | None:
    """The two-factor code from --otp, else TOKENIM_OTP, checked for its shape (6 digits); None if neither is set."""
    text = getattr(args, "otp", None) or os.environ.get(OTP_ENV)
    return clean_code(text) if text else None


def otp_source(args: argparse.Namespace) -> str | CodeSource:
    """Where a command's client finds a two-factor code when the server asks for one (`two_factor.use_codes`):
    the code given, else a prompt at a terminal, else the sentence that says how to give one."""
    code = given_code(args)
    if code is not None:
        return code

    async def prompt() -> str:
        if not sys.stdin.isatty():
            raise TokenIMError(ErrorCode.OTP_REQUIRED, NO_TERMINAL)
        return ask("Two-factor code (from your authenticator app): ")

    return prompt


__all__ = ["MIN_SCORE", "PromptAborted", "ask", "check_strength", "given_code", "otp_source", "read_passphrase"]
