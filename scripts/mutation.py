"""`make mutation`: mutmut over the security-critical modules, one group at a time, each group with only
the tests that guard it (mutmut narrows further to the tests that reach each mutated function).

Each group runs in a fresh directory under build/mutation/ (a copy of src/ and tests/ with a pyproject.toml
naming that group's modules and tests), so groups never share mutmut's state and no stale result is reused.
Tests run on SQLite only. Prints the surviving mutants and a summary line per group; the known survivors,
and why each is harmless, are listed in docs/testing.md.

    python scripts/mutation.py            # every group
    python scripts/mutation.py login      # one group (while developing)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"

# group -> (modules to mutate, tests that guard them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "signing": (
        ["src/tokenim/core/canonical.py", "src/tokenim/core/signing.py", "src/tokenim/protocol/auth.py"],
        ["tests/unit/test_core.py", "tests/unit/test_crypto_device.py"],
    ),
    "key-objects": (
        ["src/tokenim/protocol/keys.py", "src/tokenim/client/keys.py", "src/tokenim/server/services/keys.py"],
        [
            "tests/unit/test_protocol_keys.py",
            "tests/unit/test_crypto_device.py",
            "tests/server/test_keys.py",
            "tests/server/test_accounts_keys.py",
        ],
    ),
    "login": (
        ["src/tokenim/server/services/auth.py", "src/tokenim/server/storage/auth.py"],
        ["tests/server/test_auth.py", "tests/server/test_promises.py", "tests/server/test_error_model.py"],
    ),
    "membership": (
        [
            "src/tokenim/server/services/membership.py",
            "src/tokenim/server/services/rooms.py",
            "src/tokenim/server/storage/rooms.py",
        ],
        ["tests/client/test_rooms.py", "tests/server/test_sync.py", "tests/server/test_membership_promises.py"],
    ),
    "delivery": (
        ["src/tokenim/server/services/messages.py", "src/tokenim/server/storage/events.py"],
        ["tests/server/test_sync.py", "tests/server/test_promises.py", "tests/server/test_membership_promises.py"],
    ),
    "olm-megolm": (
        ["src/tokenim/crypto/olm.py", "src/tokenim/crypto/megolm.py", "src/tokenim/crypto/machine.py"],
        ["tests/unit/test_megolm_olm.py"],
    ),
    "writer": (
        ["src/tokenim/server/services/writer.py"],
        ["tests/server/test_writer.py", "tests/server/test_sync.py"],
    ),
}

RESULT = re.compile(r"^\s*(\S+__mutmut_\d+): (.+)$")


def _config(modules: list[str], tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {toml_list(modules)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list([t for t in tests if (ROOT / t).exists()])}\n"
        'pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:cacheprovider", "-o", "addopts="]\n'
    )


def _prepare(group: str) -> Path:
    """A fresh copy of src/ and tests/ with this group's mutmut settings (no results kept from an earlier run)."""
    modules, tests = GROUPS[group]
    where = WORK / group
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for name in ("src", "tests"):
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (where / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + _config(modules, tests))
    return where


def _run(group: str, env: dict[str, str]) -> tuple[dict[str, str], float]:
    where = _prepare(group)
    start = time.monotonic()
    mutmut = [sys.executable, "-m", "mutmut"]
    run = subprocess.run([*mutmut, "run", "--max-children", str(os.cpu_count() or 2)], cwd=where, env=env, timeout=3600)
    if run.returncode != 0:
        raise SystemExit(f"mutation: mutmut run failed for group {group} (exit {run.returncode})")
    out = subprocess.run(
        [*mutmut, "results", "--all", "true"], cwd=where, env=env, capture_output=True, text=True, timeout=600, check=True
    )
    results = {m.group(1): m.group(2).strip() for m in map(RESULT.match, out.stdout.splitlines()) if m}
    return results, time.monotonic() - start


def main(argv: list[str]) -> int:
    groups = argv or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"mutation: unknown group(s) {unknown}; known: {list(GROUPS)}", file=sys.stderr)
        return 2
    # SQLite only, and never the CI guard that wants PostgreSQL.
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENIM_TEST_DATABASE_URL", "CI")}
    summary, survivors = [], []
    total_start = time.monotonic()
    for group in groups:
        results, seconds = _run(group, env)
        killed = sum(1 for s in results.values() if s == "killed")
        alive = sorted(name for name, s in results.items() if s != "killed")
        survivors.extend((group, name, results[name]) for name in alive)
        summary.append(f"{group:12} {len(results):5} mutants {killed:5} killed {len(alive):4} survived {seconds:7.0f} s")
    print("\nSurviving mutants (show one with: cd build/mutation/<group> && ../../../.venv/bin/mutmut show <name>):")
    for group, name, status in survivors:
        print(f"  {group:12} {name}: {status}")
    print("\n" + "\n".join(summary))
    print(f"total {time.monotonic() - total_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
