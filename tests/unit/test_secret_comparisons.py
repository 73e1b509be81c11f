"""Secrets are compared in constant time (docs/threat-model.md, "Comparing secrets"): in Python, a token,
nonce, MAC, commitment, code or their hashes is compared with `hmac.compare_digest` / `secrets.compare_digest`,
never `==`; in SQL only SHA-256 hashes of high-entropy secrets are looked up (a lookup's timing can reveal
bits of the hash, which say nothing about a 128-bit-or-more secret). This test reads the source and refuses
an `==` or `!=` on anything named like a secret, outside SQL expressions, and tests its own checker."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).parents[2] / "src" / "tokenim"
SECRET = re.compile(r"(token|nonce|secret|mac|commitment|key_check|password|passphrase|otp|signature|code_hash|_hash)$", re.I)
# Comparisons that look like a secret's and are not, as (file, expression); none today.
# Compared plainly on purpose, each with why it is not a secret.
ALLOWED: set[tuple[str, str]] = {
    # The audit log's hash chain: public integrity hashes of stored rows, read and shown to admins; a
    # timing difference reveals nothing an admin listing the log does not already see.
    ("server/services/audit.py", "row.hash != entry_hash(row, row.seq, row.prev_hash or '')"),
    ("server/services/audit.py", "row.prev_hash == before.prev_hash"),
    ("server/services/audit.py", "nxt.prev_hash != row.hash"),
    ("server/services/audit.py", "row.prev_hash != (self._last.hash if self._last is not None else GENESIS_HASH)"),
}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    if isinstance(node, ast.Call):
        return _name(node.func)
    return ""


def _is_sql(node: ast.expr) -> bool:
    """A SQLAlchemy column (`table.c.x`, `c.x`): the comparison builds a WHERE clause, it compares nothing here."""
    while isinstance(node, ast.Attribute):
        if (isinstance(node.value, ast.Name) and node.value.id == "c") or node.attr == "c":
            return True
        node = node.value
    return False


def secret_comparisons(source: str) -> list[str]:
    """Every `==` / `!=` in `source` with an operand named like a secret, outside SQL expressions."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(_is_sql(o) for o in operands):
            continue
        if any(isinstance(o, ast.Constant) and o.value in (None, "", 0) for o in operands):
            continue  # "is it empty", not "is it this secret"
        if any(SECRET.search(_name(o)) for o in operands):
            found.append(ast.unparse(node))
    return found


def test_no_secret_is_compared_with_equals() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for expr in secret_comparisons(path.read_text()):
            if (rel, expr.replace('"', "'")) not in ALLOWED:
                problems.append(f"{rel}: {expr}")
    assert not problems, "compare secrets with hmac.compare_digest:\n" + "\n".join(problems)


def test_the_checker_finds_what_it_should_and_only_that() -> None:
    assert secret_comparisons("ok = slot.token_hash == secret_hash(bearer)") == ["slot.token_hash == secret_hash(bearer)"]
    assert secret_comparisons("if mac != expected_mac: pass") == ["mac != expected_mac"]
    assert secret_comparisons("if row['nonce'] == nonce: pass") == ["row['nonce'] == nonce"]
    assert secret_comparisons("q = select(t).where(t.c.token_hash == token_hash)") == []
    assert secret_comparisons("q = delete(x).where(c.id_hash == id_hash)") == []
    assert secret_comparisons("ok = hmac.compare_digest(mac, expected)") == []
    assert secret_comparisons("if token == '': pass") == []
    assert secret_comparisons("if status_code == 404 and kind == 'x': pass") == []
