"""Names other people see (room names, usernames, e-mail addresses) hold no control or bidirectional-override
characters: the server refuses them with `invalid_request` and a sentence, and stores nothing."""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

import httpx
import pytest

from tests.server.served import auth, strict_json
from tests.server.test_errors import count_rows, new_identity, registration_body
from tokenim.client import Client
from tokenim.core.clock import FakeClock
from tokenim.core.errors import TokenIMError
from tokenim.core.names import check_name, name_problem
from tokenim.server.storage.database import Database
from tokenim.server.storage.tables import rooms, users

# Each would change what a terminal shows: colours or window titles (ESC, CSI), a bell, an overwritten
# line (CR), a fake second line (LF, U+2028, U+0085), or reversed text (the bidi overrides and isolates).
BAD_NAMES = [
    "evil\x1b]0;owned\x07",
    "\x1b[31mred",
    "bell\x07",
    "over\rwrite",
    "two\nlines",
    "tab\there",
    "del\x7f",
    "csi\x9b31m",
    "nel\x85",
    "line\u2028sep",
    "para\u2029sep",
    "txt.exe\u202egnp",
    "lro\u202dx",
    "lre\u202ax",
    "pdf\u202cx",
    "iso\u2066x\u2069",
    "fsi\u2068x",
    "mark\u200fx",
    "alm\u061cx",
]
GOOD_NAMES = ["Team", "Équipe été", "チーム", "family \U0001f468\u200d\U0001f469\u200d\U0001f467", "a-b_c.d (2)", "עברית"]


# Refused outright: format characters (zero-width space and the like make `p\u200blans` look like `plans`),
# invisible operators, deprecated format controls, annotation and tag characters, private use, unassigned, and a
# zero-width joiner that does not join two visible characters.
HIDDEN_CHARACTER_NAMES = [
    "p\u200blans",
    "\u2061x",
    "x\u206a",
    "x\ufff9y",
    "x\U000e0001",
    "x\ue000",
    "x\u0378",
    "x\U0010ffff",
    "\u200dx",
    "x\u200d",
    "a\u200d\u200db",
    "a \u200d b",
    "a\u200d\u0301",
]
# Default-ignorable code points that are letters or marks, not format characters, refused anywhere (found from
# outside: each made `plans` and a name that looks just like it): the combining grapheme joiner, variation
# selectors (U+FE0F too, but after a symbol), Hangul fillers, Khmer inherent vowels, Mongolian selectors.
IGNORABLE_NAMES = [
    "pla\u034fns",
    "plans\ufe00",
    "pl\ufe0eans",
    "plans\ufe0f",
    "\ufe0fplans",
    "\u2764\ufe0f\ufe0f",
    "plans\U000e0100",
    "pla\U000e01efns",
    "\u115fplans",
    "pla\u1160ns",
    "plans\u3164",
    "p\uffa0lans",
    "pla\u17b4ns",
    "pla\u17b5ns",
    "pla\u180bns",
    "pla\u180fns",
    "pla\u00adns",
]
# Nothing visible: the braille blank, a lone combining mark, among spaces.
NOTHING_VISIBLE_NAMES = ["\u2800", "\u0301", " \u2800 ", "\u20dd"]
# Emoji sequences joined by U+200D (after a variation selector or a skin tone too) and combining accents stay fine;
# so does U+FE0F after a symbol (the red heart, a coloured copyright sign).
JOINED_NAMES = [
    "\u2764\ufe0f\u200d\U0001f525",
    "dev \U0001f468\U0001f3fd\u200d\U0001f4bb",
    "Cafe\u0301",
    "love \u2764\ufe0f",
    "\u00a9\ufe0f 2026",
]
# Unicode's Default_Ignorable_Code_Point, written out apart from the code (from the `regex` module's
# \p{Default_Ignorable_Code_Point}), so a range dropped from names.py shows here.
DEFAULT_IGNORABLE = [
    *(0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFEFF, 0xFFA0),
    *range(0x180B, 0x1810),
    *range(0x200B, 0x2010),
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2070),
    *range(0xFE00, 0xFE10),
    *range(0xFFF0, 0xFFF9),
    *range(0x1BCA0, 0x1BCA4),
    *range(0x1D173, 0x1D17B),
    *range(0xE0000, 0xE1000),
]


def refused(resp: httpx.Response) -> str:
    assert resp.status_code == 400, resp.text
    err = strict_json(resp.content)["error"]
    assert err["code"] == "invalid_request", err
    assert "\n" not in err["message"] and "\x1b" not in err["message"]
    return str(err["message"])


def test_the_name_rule() -> None:
    for name in BAD_NAMES + HIDDEN_CHARACTER_NAMES + IGNORABLE_NAMES:
        assert name_problem(name) is not None, repr(name)
    for name in NOTHING_VISIBLE_NAMES:
        with pytest.raises(TokenIMError, match="only spaces, marks and invisible characters"):
            check_name(name, "room name")
    for name in GOOD_NAMES + JOINED_NAMES:
        assert name_problem(name) is None, repr(name)
        assert check_name(f"  {name} ", "room name") == name


def test_the_name_rule_over_every_code_point() -> None:
    """Each refused category, each default-ignorable code point, and each character that shows nothing, checked for
    every code point Unicode has."""
    ignorable = {chr(cp) for cp in DEFAULT_IGNORABLE}
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        category = unicodedata.category(ch)
        if (category in ("Cf", "Co", "Cn", "Cs", "Cc", "Zl", "Zp") or ch in ignorable) and ch != "\u200d":
            assert name_problem(f"a{ch}b") is not None, f"U+{cp:04X}"
        elif category in ("Mn", "Me", "Mc", "Zs") or ch.isspace() or ch == "\u2800":
            with pytest.raises(TokenIMError):
                check_name(f" {ch} ", "room name")
        else:
            assert name_problem(f"a{ch}b") is None, f"U+{cp:04X}"


async def test_room_names_with_control_or_bidi_characters_are_refused(
    http: httpx.AsyncClient, alice: Client, database: Database
) -> None:
    room = (await alice.rooms.create("fine")).room_id
    for name in BAD_NAMES:
        message = refused(await http.post("/v1/rooms", json={"name": name}, headers=auth(alice)))
        assert "room name" in message, message
        refused(await http.post(f"/v1/rooms/{room}/name", json={"name": name}, headers=auth(alice)))
    assert await count_rows(database, rooms) == 1
    assert (await http.get(f"/v1/rooms/{room}", headers=auth(alice))).json()["name"] == "fine"
    # Names that look like ids: `!fake`, another room's id, a person (found from outside).
    for name in ["!fake", room, " @carol:localhost", "@bob", "\uff01x", "\uff20bob", "\ufe6bbob", "\ufe57x", "\u203c"]:
        message = refused(await http.post("/v1/rooms", json={"name": name}, headers=auth(alice)))
        assert "can't start with" in message, message
        refused(await http.post(f"/v1/rooms/{room}/name", json={"name": name}, headers=auth(alice)))
    for name in ["", "   ", "\u200b", " \u2060\ufeff ", *HIDDEN_CHARACTER_NAMES, *IGNORABLE_NAMES, *NOTHING_VISIBLE_NAMES]:
        refused(await http.post("/v1/rooms", json={"name": name}, headers=auth(alice)))
        refused(await http.post(f"/v1/rooms/{room}/name", json={"name": name}, headers=auth(alice)))


async def test_ordinary_names_in_any_script_are_kept(http: httpx.AsyncClient, alice: Client) -> None:
    room = (await alice.rooms.create("fine")).room_id
    for n, name in enumerate(GOOD_NAMES + JOINED_NAMES):
        resp = await http.post("/v1/rooms", json={"name": f" {name} "}, headers=auth(alice))
        assert resp.status_code == 200 and resp.json()["name"] == name, resp.text
        # A name is unique among one's rooms: set it on `room` after moving the new room out of the way.
        await http.post(f"/v1/rooms/{resp.json()['room_id']}/name", json={"name": f"other {n}"}, headers=auth(alice))
        resp = await http.post(f"/v1/rooms/{room}/name", json={"name": f"{name}  "}, headers=auth(alice))
        assert resp.status_code == 200, resp.text
        assert (await http.get(f"/v1/rooms/{room}", headers=auth(alice))).json()["name"] == name


@pytest.mark.parametrize("field", ["username", "email"])
async def test_usernames_and_email_addresses_with_control_or_bidi_characters_are_refused(
    http: httpx.AsyncClient, clock: FakeClock, database: Database, field: str
) -> None:
    for n, bad in enumerate(BAD_NAMES):
        body: dict[str, Any] = registration_body(new_identity(f"erin{n}", clock), f"erin{n}", clock.now_ms())
        if field == "username":
            body["username"] = f"erin{bad}"
        else:
            body["email"] = f"erin{bad}@example.com"
        message = refused(await http.post("/v1/register", json=body))
        assert field in message, message
    assert await count_rows(database, users) == 0
    ok = registration_body(new_identity("erin", clock), "erin", clock.now_ms()) | {"email": "erin@example.com"}
    assert (await http.post("/v1/register", json=ok)).status_code == 200


# Pairs that look the same and so are one name among a person's rooms: canonical and compatibility forms, case,
# invisible joiners and emoji presentation, runs of spaces.
SAME_NAMES = [
    ("caf\u00e9", "cafe\u0301"),
    ("plans", "\uff50\uff4c\uff41\uff4e\uff53"),
    ("Plans", "PLANS"),
    ("stra\u00dfe", "STRASSE"),
    ("\ufb01le", "file"),
    ("pl\u200dans", "plans"),
    ("love \u2764\ufe0f", "love \u2764"),
    ("a b", "a\u00a0\u00a0b"),
    ("x\u00b2", "x2"),
]


@pytest.mark.parametrize(("first", "second"), SAME_NAMES)
async def test_names_that_look_the_same_are_the_same_name(
    http: httpx.AsyncClient, alice: Client, database: Database, first: str, second: str
) -> None:
    resp = await http.post("/v1/rooms", json={"name": first}, headers=auth(alice))
    assert resp.status_code == 200, resp.text
    resp = await http.post("/v1/rooms", json={"name": second}, headers=auth(alice))
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "room_name_taken", resp.text
    other = (await http.post("/v1/rooms", json={"name": "other"}, headers=auth(alice))).json()["room_id"]
    resp = await http.post(f"/v1/rooms/{other}/name", json={"name": second}, headers=auth(alice))
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "room_name_taken", resp.text
    assert await count_rows(database, rooms) == 2


# E-mail addresses: the same character rule, and no invisible joiner or compatibility form at all.
BAD_EMAILS = ["\u3164@b.c", "a\u034f@b.c", "\uff41@b.c", "a@\uff42.c", "a\u200db@c.d", "a\ufe0f@b.c", "\ufb01@b.c"]


@pytest.mark.parametrize("email", BAD_EMAILS)
async def test_email_addresses_that_pass_for_others_are_refused(
    http: httpx.AsyncClient, clock: FakeClock, database: Database, email: str
) -> None:
    body = registration_body(new_identity("erin", clock), "erin", clock.now_ms()) | {"email": email}
    assert "email" in refused(await http.post("/v1/register", json=body))
    assert await count_rows(database, users) == 0
    ok = body | {"email": "\u00e9rin@example.com"}
    assert (await http.post("/v1/register", json=ok)).status_code == 200
