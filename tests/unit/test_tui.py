"""The terminal app's pieces without a server: how messages and rooms are drawn (text from others shown as
typed, never as markup or terminal controls), the sender badges, mentions, unread counts, commands typed in
the composer, notifications, and the browser mode's local-only checks."""

from __future__ import annotations

import shlex
from datetime import UTC
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from rich.console import Console

from tokenim.client import Message
from tokenim.client.attention import Attention, awaiting_key, mentions
from tokenim.client.messages import KEY_FILE_WHY
from tokenim.crypto.megolm import KEY_NOT_ARRIVED
from tokenim.protocol.api import RoomSummary
from tokenim.tui.commands import BY_NAME, read_line
from tokenim.tui.model import ChatModel
from tokenim.tui.notify import Notifier, NotifyMode
from tokenim.tui.serve import LocalServer, command_line
from tokenim.tui.text import Shown, Trust, message_text, room_label, room_title, trust_of

ME = "@alice:tokenim.test"
TS = 1_800_000_000_000


def msg(body: str | None = "hi", sender: str = "@bob:tokenim.test", **kw: object) -> Message:
    fields: dict[str, object] = {"verified": True, "why_not": "you have not verified @bob"} | kw
    return Message("$e1", "!r", sender, "DEV", body, TS, **fields)  # type: ignore[arg-type]


def drawn(text: object) -> str:
    """What a terminal shows for a Rich renderable."""
    console = Console(width=200, record=True, force_terminal=True, color_system="truecolor")
    console.print(text)
    return console.export_text(styles=False)


@pytest.mark.parametrize(
    "body",
    ["[red]x[/red]", "[link=https://evil.example]click[/link]", "[bold]", "[/]", ":smile: [@click=app.quit]q[/]", "\\[b]"],
)
def test_markup_in_a_message_is_shown_as_typed(body: str) -> None:
    shown = drawn(message_text(Shown(msg(body), ME, Trust.UNVERIFIED), UTC))
    assert body in shown


def test_terminal_controls_in_a_message_and_a_room_name_are_shown_escaped() -> None:
    body = "a\x1b]0;title\x07b\x1b[2Jc\u202ed\rX"
    shown = drawn(message_text(Shown(msg(body), ME, Trust.UNVERIFIED), UTC))
    assert "a\\x1b]0;title\\x07b\\x1b[2Jc\\u202ed\\x0dX" in shown
    room = RoomSummary(room_id="!r", kind="group", name="p\x1b[31mlans", membership="join", role="member", members=[])
    assert "p\\x1b[31mlans" in drawn(room_label(room_title(room, ME), room, 0, 0, False))


def test_a_multi_line_message_keeps_its_lines_under_its_first() -> None:
    shown = drawn(message_text(Shown(msg("one\ntwo\r\nthree"), ME, Trust.UNVERIFIED), UTC)).splitlines()
    assert shown[0].endswith("@bob ?: one") and shown[1] == "        two" and shown[2] == "        three"


@pytest.mark.parametrize(
    ("fields", "verify_again", "trust"),
    [
        ({"verified": True, "verified_by": "sas", "why_not": None}, False, Trust.VERIFIED),
        ({"verified": True}, False, Trust.UNVERIFIED),
        ({"verified": True}, True, Trust.CHANGED),
        ({"verified": False, "why_not": "device DEV is not signed by the master key you trust"}, False, Trust.UNSIGNED),
        ({"verified": False, "why_not": "device DEV of @bob:tokenim.test was revoked"}, False, Trust.REVOKED),
        ({"verified": False, "why_not": f"{KEY_FILE_WHY}: it is verified once…"}, False, Trust.KEY_FILE),
    ],
)
def test_the_badge_follows_what_the_sdk_says(fields: dict[str, object], verify_again: bool, trust: Trust) -> None:
    assert trust_of(msg(**fields), ME, verify_again) is trust


def test_own_messages_carry_no_badge_unless_the_device_is_not_signed() -> None:
    assert trust_of(msg(sender=ME, why_not=None), ME) is Trust.OWN
    assert trust_of(msg(sender=ME, verified=False, why_not="your device X is not signed"), ME) is Trust.UNSIGNED


@pytest.mark.parametrize(
    ("body", "mentioned"),
    [
        ("hi @alice", True),
        ("@Alice: look", True),
        ("@alice, look", True),
        ("ask @alice.", True),
        ("@alice:tokenim.test please", True),
        ("@alice2 hi", False),
        ("@alice.b hi", False),
        ("@alice:other.example hi", False),
        ("mail alice@alice hi", False),
        ("alice", False),
        (None, False),
    ],
)
def test_what_counts_as_a_mention(body: str | None, mentioned: bool) -> None:
    assert mentions(body, ME) is mentioned


def test_a_message_waiting_for_its_key_is_told_apart_from_a_rejected_one() -> None:
    assert awaiting_key(msg(None, warning=KEY_NOT_ARRIVED))
    assert not awaiting_key(msg(None, warning="This message failed its integrity check."))


def test_unread_counts_mentions_and_attention() -> None:
    model = ChatModel(ME)
    rooms = [
        RoomSummary(room_id="!a", kind="group", name="plans", membership="join", role="member", members=[ME]),
        RoomSummary(room_id="!b", kind="direct", name="", membership="join", role="member", members=[ME, "@bob:tokenim.test"]),
        RoomSummary(room_id="!c", kind="group", name="zzz", membership="invite", role="member", members=[]),
    ]
    assert model.set_rooms(rooms)
    assert [r.room_id for r in model.ordered()] == ["!c", "!b", "!a"]  # invitations first
    model.open("!a")
    plans = model.add(Message("$1", "!a", "@bob:tokenim.test", "D", "x", TS, True), Attention(), seen=True)
    assert plans is not None and plans.unread == 0
    direct = model.add(Message("$2", "!b", "@bob:tokenim.test", "D", "y", TS, True), Attention(direct=True), seen=False)
    assert direct is not None and (direct.unread, direct.mentions, direct.attention) == (1, 0, True)
    model.add(Message("$2", "!b", "@bob:tokenim.test", "D", "y", TS, True), Attention(direct=True), seen=False)
    assert direct.unread == 1  # the same message twice counts once
    model.add(Message("$3", "!b", ME, "D", "mine", TS, True), Attention(), seen=False)
    assert direct.unread == 1  # your own messages are never unread
    model.open("!b")
    assert (direct.unread, direct.attention) == (0, False)
    assert not model.set_rooms(rooms) and model.set_rooms(rooms[1:])  # left a room: it goes


def test_composer_lines_that_are_commands() -> None:
    assert read_line("/invite @bob @carol").command is BY_NAME["invite"]
    assert read_line("/invite @bob @carol").argument == "@bob @carol"
    assert read_line("//shrug").text == "/shrug" and read_line("//shrug").command is None
    assert read_line("/ not a command").text == "/ not a command"
    assert read_line("/frobnicate now").unknown == "frobnicate"
    assert read_line("hello /invite").text == "hello /invite"


async def test_a_notification_carries_no_markup_and_no_options(tmp_path: Path) -> None:
    bells: list[int] = []
    notifier = Notifier(lambda: bells.append(1), NotifyMode.DESKTOP, command=str(tmp_path / "notify-send"))
    notifier.alert("@bob · plans", "-u critical <b>hi</b> & \x1b[31mred\nsecond line")
    (argv,) = notifier.sent
    assert argv[2] == "--"  # what follows is never an option, however it starts
    assert argv[4] == "-u critical &lt;b&gt;hi&lt;/b&gt; &amp; \\x1b[31mred" and bells == [1]


async def test_without_notify_send_there_is_only_the_bell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    bells: list[int] = []
    notifier = Notifier(lambda: bells.append(1))
    notifier.alert("@bob", "hi")
    assert notifier.command is None and notifier.sent == [] and bells == [1]
    off = Notifier(lambda: bells.append(1), NotifyMode.OFF, command="/bin/true")
    off.alert("@bob", "hi")
    assert off.sent == [] and bells == [1]


@pytest.mark.parametrize(
    ("headers", "websocket", "allowed"),
    [
        ({"Host": "127.0.0.1:8471"}, False, True),
        ({"Host": "localhost:8471"}, False, True),
        ({"Host": "evil.example:8471"}, False, False),  # DNS rebinding: another name for this address
        ({"Host": "127.0.0.1:8471", "Origin": "http://127.0.0.1:8471"}, True, True),
        ({"Host": "127.0.0.1:8471", "Origin": "http://evil.example"}, True, False),  # another site's page
        ({"Host": "127.0.0.1:8471"}, True, False),  # no Origin: not a page of ours
        ({"Host": "127.0.0.1:8471", "Origin": "null"}, True, False),
    ],
)
def test_the_browser_mode_answers_only_its_own_pages(headers: dict[str, str], websocket: bool, allowed: bool) -> None:
    server = LocalServer("true", host="127.0.0.1", port=8471)
    request = make_mocked_request("GET", "/ws" if websocket else "/", headers=headers)
    assert server.allowed(request, websocket=websocket) is allowed


def test_the_command_each_page_runs_is_quoted() -> None:
    line = command_line(Path("/tmp/my profile; rm -rf ~"), "bell")
    argv = shlex.split(line)
    assert argv[-6:] == ["--profile", "/tmp/my profile; rm -rf ~", "chat", "--in-browser", "--notify", "bell"]


async def test_an_unexpected_failure_is_said_in_a_sentence() -> None:
    from tokenim.tui import ChatApp
    from tokenim.tui.widgets import Banner

    async def broken() -> None:
        raise RuntimeError("secret detail")

    app = ChatApp()  # no profile opened: nothing connects
    async with app.run_test() as pilot:
        app.run_worker(broken(), group="actions", exit_on_error=False)
        app.run_worker(broken(), group="live", exit_on_error=False)
        for _ in range(100):
            await pilot.pause()
            if app.query_one("#offline", Banner).display and app.said:
                break
        assert list(app.said) == ["Something unexpected went wrong; nothing more was done."]
        assert app.query_one("#offline", Banner).display
