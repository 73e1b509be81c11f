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
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"

# group -> (modules to mutate, tests that guard them). A test is a file or a node id (file::test); keep each
# selection to the tests that exercise the group's modules, so that a group runs in minutes.
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "signing": (
        ["src/tokenim/core/canonical.py", "src/tokenim/core/signing.py", "src/tokenim/protocol/auth.py"],
        ["tests/unit/test_core.py", "tests/unit/test_crypto_device.py", "tests/unit/test_protocol_keys.py"],
    ),
    "key-objects": (
        ["src/tokenim/protocol/keys.py", "src/tokenim/client/keys.py", "src/tokenim/server/services/keys.py"],
        [
            "tests/unit/test_protocol_keys.py",
            "tests/unit/test_crypto_device.py",
            "tests/server/test_keys.py",
            "tests/server/test_device_limits.py",
            "tests/client/test_promises.py::test_a_claimed_one_time_key_that_does_not_verify_starts_no_session",
            "tests/client/test_promises.py::test_a_one_time_key_signed_by_another_device_is_refused",
        ],
    ),
    "login": (
        ["src/tokenim/server/services/auth.py", "src/tokenim/server/storage/auth.py"],
        [
            "tests/server/test_auth.py",
            "tests/server/test_login_storage.py",
            "tests/server/test_registration.py",
            "tests/server/test_promises.py::test_a_challenge_answered_for_another_user_or_device_is_spent",
            "tests/server/test_promises.py::test_an_expired_challenge_is_spent_by_the_late_answer",
            "tests/server/test_promises.py::test_a_challenge_is_usable_until_just_before_it_expires_and_only_once",
            "tests/server/test_errors.py::test_missing_or_garbage_tokens_are_401",
            "tests/server/test_errors.py::test_an_expired_access_token_is_token_expired",
            "tests/server/test_errors.py::test_challenge_for_unknown_user_or_device",
            "tests/server/test_errors.py::test_a_bad_login_signature_is_refused_and_spends_the_challenge",
            "tests/server/test_errors.py::test_a_replayed_nonce_is_challenge_invalid",
            "tests/server/test_errors.py::test_an_expired_nonce_is_challenge_expired",
            "tests/server/test_errors.py::test_a_nonce_is_bound_to_its_user_and_device",
            "tests/client/test_names_sessions_limits.py::test_logout_all_ends_every_session_of_the_account",
        ],
    ),
    "membership": (
        [
            "src/tokenim/server/services/membership.py",
            "src/tokenim/server/services/rooms.py",
            "src/tokenim/server/storage/rooms.py",
        ],
        [
            "tests/server/test_membership.py",
            "tests/client/test_rooms.py",
            "tests/server/test_sync.py::test_history_needs_membership",
        ],
    ),
    "delivery": (
        ["src/tokenim/server/services/messages.py", "src/tokenim/server/storage/events.py"],
        [
            "tests/server/test_sync.py",
            "tests/server/test_sender_identity.py",
            "tests/server/test_delivery.py",
            "tests/server/test_promises.py::test_acknowledging_on_one_device_keeps_the_other_devices_messages",
            "tests/server/test_promises.py::test_to_device_messages_reach_only_the_device_they_name",
            "tests/server/test_membership.py",
            "tests/client/test_promises.py::test_dropped_to_device_messages_are_acknowledged_on_that_device_only",
        ],
    ),
    "olm-megolm": (
        ["src/tokenim/crypto/olm.py", "src/tokenim/crypto/megolm.py", "src/tokenim/crypto/machine.py"],
        ["tests/unit/test_megolm_olm.py", "tests/client/test_promises.py"],
    ),
    "writer": (
        ["src/tokenim/server/services/writer.py"],
        [
            "tests/server/test_writer.py",
            "tests/server/test_durability.py",
            "tests/server/test_sync.py::test_writer_batches_concurrent_sends",
            "tests/server/test_sync.py::test_writer_isolates_a_failing_job",
            "tests/server/test_sync.py::test_send_is_idempotent",
        ],
    ),
}

# Lines whose expressions are not mutated: building an error to raise or return (its code and sentence; the
# condition that decides to refuse, on the line before, is still mutated), a line holding nothing but a string
# literal (the continuation of a sentence), and `what = "..."` (the name of the object in an error sentence).
# Mutating these only makes equivalent mutants and costs test runs.
DO_NOT_MUTATE_PATTERNS = [
    r"^\s*raise \w+\(",
    r"^\s*return (TokenIMError|CryptoError)\(",
    r'^\s*f?"[^"]*"\s*[,)]*\s*$',
    r'^\s*what = "[^"]*"$',
]

RESULT = re.compile(r"^\s*(\S+__mutmut_\d+): (.+)$")


def _config(modules: list[str], tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    patterns = ", ".join(f"'{p}'" for p in DO_NOT_MUTATE_PATTERNS)  # TOML literal strings: no escapes
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {toml_list(modules)}\n"
        f"do_not_mutate_patterns = [{patterns}]\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:cacheprovider", "-o", "addopts="]\n'
    )


def _prepare(group: str) -> Path:
    """A fresh copy of src/ and tests/ with this group's mutmut settings (no results kept from an earlier run)."""
    modules, tests = GROUPS[group]
    missing = [t for t in modules + tests if not (ROOT / t.split("::")[0]).exists()]
    if missing:
        raise SystemExit(f"mutation: group {group} names files that do not exist: {missing}")
    where = WORK / group
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for name in ("src", "tests"):
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (where / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + _config(modules, tests))
    return where


def _cpu_seconds() -> float:
    """CPU time (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(group: str, env: dict[str, str]) -> tuple[dict[str, str], float, float]:
    where = _prepare(group)
    start, cpu = time.monotonic(), _cpu_seconds()
    mutmut = [sys.executable, "-m", "mutmut"]
    run = subprocess.run([*mutmut, "run", "--max-children", str(os.cpu_count() or 2)], cwd=where, env=env, timeout=3600)
    if run.returncode != 0:
        raise SystemExit(f"mutation: mutmut run failed for group {group} (exit {run.returncode})")
    out = subprocess.run(
        [*mutmut, "results", "--all", "true"], cwd=where, env=env, capture_output=True, text=True, timeout=600, check=True
    )
    results = {m.group(1): m.group(2).strip() for m in map(RESULT.match, out.stdout.splitlines()) if m}
    return results, time.monotonic() - start, _cpu_seconds() - cpu


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
        results, seconds, cpu = _run(group, env)
        killed = sum(1 for s in results.values() if s == "killed")
        alive = sorted(name for name, s in results.items() if s != "killed")
        survivors.extend((group, name, results[name]) for name in alive)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(results[a] for a in alive).items()))
        line = f"{group:12} {len(results):5} mutants {killed:5} killed {len(alive):4} not killed ({kinds or 'none'})"
        summary.append(f"{line}; {seconds:5.0f} s wall, {cpu:5.0f} s CPU")
        print(f"\nmutation: {summary[-1]}", flush=True)
    print("\nSurviving mutants (show one with: cd build/mutation/<group> && ../../../.venv/bin/mutmut show <name>):")
    for group, name, status in survivors:
        print(f"  {group:12} {name}: {status}")
    print("\n" + "\n".join(summary))
    print(f"total {time.monotonic() - total_start:.0f} s wall, {_cpu_seconds():.0f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
