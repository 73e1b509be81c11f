"""`tokenim admin audit [verify]` (the server's audit log, for admins) and `tokenim security review` (yours)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tokenim.cli.account import open_client
from tokenim.cli.output import clean, when
from tokenim.core.errors import ErrorCode, TokenIMError
from tokenim.protocol.audit import MAX_REVIEW_DAYS

MAX_LIMIT = 1000


async def cmd_admin_audit(args: argparse.Namespace) -> dict[str, Any]:
    """List the audit log (newest first), or with `verify` have the server check its hash chain."""
    if args.audit_action == "verify":
        if args.user or args.before is not None:
            raise TokenIMError(
                ErrorCode.INVALID_REQUEST, "`tokenim admin audit verify` checks the whole log: it takes no --user or --before."
            )
        async with await open_client(args) as client:
            report = (await client.admin.verify_audit()).model_dump()
        return {**report, "failed": not report["ok"]}  # a broken chain exits non-zero
    if not 1 <= args.limit <= MAX_LIMIT:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"--limit must be between 1 and {MAX_LIMIT}, not {args.limit}.")
    async with await open_client(args) as client:
        user = client.full_user_id(args.user) if args.user else None
        page = await client.admin.audit(args.limit, before=args.before, user_id=user)
        return page.model_dump()


def _details(details: dict[str, Any]) -> str:
    return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(details.items()))


def _entry_line(e: dict[str, Any]) -> str:
    number = f"#{e['seq']}" if e["seq"] is not None else "#-"
    parts = [number, when(e["ts"]), e["event"], e["user_id"] or "-", e["device_id"] or "-"]
    if e["ip"]:
        parts.append(f"from {e['ip']}")
    if e["user_agent"]:
        parts.append(json.dumps(e["user_agent"], ensure_ascii=False))
    if e["details"]:
        parts.append(_details(e["details"]))
    return "  ".join(clean(p) for p in parts)


def human_admin_audit(r: dict[str, Any]) -> str:
    if "problems" in r:
        return human_verify(r)
    if not r["events"]:
        return "No audit records."
    lines = [_entry_line(e) for e in r["events"]]
    if r["next_before"] is not None:
        lines.append(f"(older records: add --before {r['next_before']})")
    return "\n".join(lines)


def human_verify(r: dict[str, Any]) -> str:
    head = r["head"]
    if r["ok"]:
        if head is None:
            return "The audit log is empty: nothing to check."
        return (
            f"The audit log is intact: {r['entries']} entries, each linked to the one before it.\n"
            f"Last entry: {head['seq']}, hash {clean(head['hash'])}\n"
            "(keep that line somewhere else: a log rewritten whole from some entry on would still link, "
            "but its last hash would differ)"
        )
    n = len(r["problems"])
    more = " (and more not listed)" if r["truncated"] else ""
    lines = [f"The audit log's hash chain is broken: {n} problem{'s' if n != 1 else ''}{more}."]
    for p in r["problems"]:
        where = f"entry {p['entry']}" if p["entry"] is not None else "no entry"
        lines.append(f"  {where}: {p['kind']}: {clean(p['message'])}")
    if head is not None:
        lines.append(f"The server's last entry: {head['seq']}, hash {clean(head['hash'])}")
    return "\n".join(lines)


async def cmd_security_review(args: argparse.Namespace) -> dict[str, Any]:
    """Your recent logins and activity, and what looks wrong."""
    if not 1 <= args.days <= MAX_REVIEW_DAYS:
        raise TokenIMError(ErrorCode.INVALID_REQUEST, f"--days must be between 1 and {MAX_REVIEW_DAYS}, not {args.days}.")
    async with await open_client(args) as client:
        review = (await client.security.review(args.days)).model_dump()
        return {"user_id": client.user_id, "days": args.days, **review}


def _login_line(login: dict[str, Any]) -> str:
    outcome = "ok    " if login["outcome"] == "success" else "FAILED"
    parts = [when(login["ts"]), outcome]
    if login["reason"]:
        parts.append(f"({login['reason']})")
    parts.append(f"device {login['device_id'] or '-'}")
    if login["ip"]:
        parts.append(f"from {login['ip']}")
    if login["user_agent"]:
        parts.append(json.dumps(login["user_agent"], ensure_ascii=False))
    return "  " + "  ".join(clean(p) for p in parts)


def _activity_line(a: dict[str, Any]) -> str:
    parts = [when(a["ts"]), a["event"]]
    if a["device_id"]:
        parts.append(f"device {a['device_id']}")
    if a["ip"]:
        parts.append(f"from {a['ip']}")
    if a["details"]:
        parts.append(_details(a["details"]))
    return "  " + "  ".join(clean(p) for p in parts)


def human_review(r: dict[str, Any]) -> str:
    days = r["days"]
    lines = [f"Security review of {clean(r['user_id'])}, last {days} day{'s' if days != 1 else ''} (since {when(r['since'])})"]
    if r["flags"]:
        lines.append(f"Looks wrong ({len(r['flags'])}):")
        lines += [f"  !! {when(f['ts'])}  {clean(f['message'])}" for f in r["flags"]]
    else:
        lines.append("Nothing looks wrong.")
    lines.append("Logins:" if r["logins"] else "Logins: none")
    lines += [_login_line(x) for x in r["logins"]]
    lines.append("Other activity:" if r["activity"] else "Other activity: none")
    lines += [_activity_line(a) for a in r["activity"]]
    return "\n".join(lines)


__all__ = ["cmd_admin_audit", "cmd_security_review", "human_admin_audit", "human_review", "human_verify"]
