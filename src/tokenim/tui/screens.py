"""Dialogs over the main screen: help, a question, a confirmation, the member list, the passphrase (browser
mode), and emoji verification. Each is keyboard first (Enter, Escape) and has buttons for the mouse."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from tokenim.client import SasShown, VerificationResult
from tokenim.core.display import clean
from tokenim.core.errors import TokenIMError
from tokenim.tui.commands import help_lines
from tokenim.tui.text import BADGES, Trust, plain


class HelpScreen(ModalScreen[None]):
    """`?`: every key and command."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        keys = Table(box=None, show_header=False, padding=(0, 1))
        keys.add_column(style="bold", no_wrap=True, min_width=32)
        keys.add_column()
        for key, what in help_lines():
            keys.add_row(Text(key), Text(what))  # Text, never markup: `[@user …]` is no tag
        badges = Table(box=None, show_header=False, padding=(0, 1))
        badges.add_column(no_wrap=True)
        badges.add_column()
        for trust in Trust:
            badge = BADGES[trust]
            if badge.mark:
                badges.add_row(Text(badge.mark, style=badge.style), Text(badge.meaning))
        with VerticalScroll(classes="dialog wide"):
            yield Static(Text("Keys and commands", style="bold"), markup=False)
            yield Static(keys, markup=False)
            yield Static(Text("\nBadges beside a sender's name", style="bold"), markup=False)
            yield Static(badges, markup=False)
            yield Static(Text("\nA message starting with / is a command; // sends one that starts with /.", style="dim"))
            yield Button("Close", id="close", variant="primary")

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.dismiss(None)


class AskScreen(ModalScreen[str | None]):
    """One question with a line to answer; Enter answers, Escape cancels (None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "", *, password: bool = False) -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.password = password

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(self.question, "bold"), markup=False, id="question")
            yield Static("", id="problem", markup=False)
            yield Input(self.value, password=self.password, id="answer")
            with Horizontal(classes="buttons"):
                yield Button("OK", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one(Input).value if event.button.id == "ok" else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes-or-no question: y or Enter on Yes, n or Escape for no."""

    BINDINGS = [Binding("escape,n", "answer(False)", "No"), Binding("y", "answer(True)", "Yes")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(self.question, "bold"), markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Yes", id="yes", variant="warning")
                yield Button("No", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class InfoScreen(ModalScreen[None]):
    """Text to read (the member list), closed with Escape or Enter."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Static(self.text, markup=False, id="info")
            yield Button("Close", id="close", variant="primary")

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.dismiss(None)


Unlock = Callable[[str], Awaitable[str | None]]


class PassphraseScreen(ModalScreen[None]):
    """The profile's passphrase, asked in the page (`tokenim chat --serve`): whoever reaches the local web
    server must still know it. `unlock(passphrase)` returns None when it opened the profile, else why not."""

    def __init__(self, profile: str, unlock: Unlock) -> None:
        super().__init__()
        self.profile = profile
        self.unlock = unlock

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(plain(f"Passphrase of the profile in {self.profile}", "bold"), markup=False)
            yield Static("", id="problem", markup=False)
            yield Input(password=True, id="answer")

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        problem = await self.unlock(event.value)
        if problem is None:
            self.dismiss(None)
            return
        self.query_one("#problem", Static).update(plain(problem, "bold red"))
        self.query_one(Input).value = ""


Verify = Callable[[Callable[[SasShown], Awaitable[bool]], Callable[[str], None]], Awaitable[VerificationResult]]


class VerifyScreen(ModalScreen[None]):
    """Emoji verification with one person: waits for them, shows the 7 emoji to compare, and asks whether they
    match (y / n, or the buttons). Escape cancels at any point (the other side is told)."""

    BINDINGS = [
        Binding("escape", "dismiss", "Cancel"),
        Binding("y", "answer(True)", "Match"),
        Binding("n", "answer(False)", "No match"),
    ]

    def __init__(self, user_id: str, verify: Verify) -> None:
        super().__init__()
        self.user_id = user_id
        self.verify = verify
        self.answer: asyncio.Future[bool] | None = None
        self.outcome: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="verify"):
            yield Static(plain(f"Verifying {self.user_id}", "bold"), markup=False)
            yield Static(plain(f"Asking {self.user_id}'s device to compare emoji with you…"), id="status", markup=False)
            yield Grid(id="emoji")
            with Horizontal(classes="buttons"):
                yield Button("They match", id="match", variant="success", disabled=True)
                yield Button("They don't match", id="differ", variant="error", disabled=True)
                yield Button("Cancel", id="close")

    def on_mount(self) -> None:
        self.run_worker(self._run(), exclusive=True)

    async def _run(self) -> None:
        status = self.query_one("#status", Static)
        try:
            result = await self.verify(self._confirm, self._waiting)
        except TokenIMError as err:
            self.outcome = err.message
            status.update(plain(err.message, "bold red"))
        else:
            self.outcome = f"{result.user_id} is verified."
            status.update(plain(f"✔ {result.user_id} is verified (device {result.device_id}).", "bold green"))
        self._ask(False)
        self.query_one("#close", Button).label = "Close"

    def _waiting(self, user_id: str) -> None:
        self.query_one("#status", Static).update(
            plain(f"Waiting for {user_id}: they verify you at the same time (v in `tokenim chat`, or `tokenim verify`).")
        )

    async def _confirm(self, shown: SasShown) -> bool:
        grid = self.query_one("#emoji", Grid)
        await grid.mount_all(
            Static(Text(f"{e['emoji']}\n{clean(e['name'])}", justify="center"), classes="emoji", markup=False)
            for e in shown.emoji
        )
        self.query_one("#status", Static).update(
            plain(f"Do these emoji match, in the same order, the ones on {shown.user_id}'s screen (device {shown.device_id})?")
        )
        self.answer = asyncio.get_running_loop().create_future()
        self._ask(True)
        try:
            return await self.answer
        finally:
            self._ask(False)
            self.query_one("#status", Static).update(plain("Waiting for the other side to confirm…"))

    def _ask(self, on: bool) -> None:
        self.query_one("#match", Button).disabled = not on
        self.query_one("#differ", Button).disabled = not on
        if on:
            self.query_one("#match", Button).focus()

    def action_answer(self, yes: bool) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "close":
            self.dismiss(None)
        else:
            self.action_answer(event.button.id == "match")


__all__ = ["AskScreen", "ConfirmScreen", "HelpScreen", "InfoScreen", "PassphraseScreen", "VerifyScreen"]
